"""Bring our view of a payment up to the PSP's, never backwards. Pure: no I/O.

Webhooks arrive late, twice, and out of order. Applying them literally would
let a late ``processing`` undo a ``succeeded``. Instead, every PSP object is
read as a *lower bound* on where the payment is: the PSP says "at least
captured 30.00, at least these refunds". `events_to_reach` returns the
events that move our state up to that bound, in the canonical order, and
nothing if we are already there or beyond. Applied in any order, any number
of times, the same set of PSP objects leads to the same final state.

Refunds are booked **by the PSP's refund id**, never by a running total: the
API path (which made the refund) and the webhook path (which hears of it)
both name the same ``re_…``, so whichever arrives second finds it booked.
A total alone cannot tell "the 40.00 refund I booked" from "another 40.00".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from payment_systems.core import payment_state as ps

OPEN = {"new", "processing", "unknown", "requires_action"}


@dataclass(frozen=True, slots=True)
class PspRefund:
    """One succeeded refund at the PSP."""

    id: str
    amount: int
    created: int | None = None
    refund_id: str | None = None  # ours, from the refund's metadata, if we made it

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> PspRefund:
        metadata = obj.get("metadata") or {}
        created = obj.get("created")
        return cls(
            str(obj["id"]),
            int(obj["amount"]),
            int(created) if created is not None else None,
            metadata.get("refund_id"),
        )


@dataclass(frozen=True, slots=True)
class PspView:
    """What one PSP object says about a payment (fields None when it does not say)."""

    status: str | None = None  # succeeded | requires_capture | failed | canceled
    amount_captured: int | None = None
    amount_capturable: int | None = None
    amount_refunded: int | None = None
    fee: int | None = None
    intent_id: str | None = None
    charge_id: str | None = None
    captured_at: int | None = None
    available_on: int | None = None
    failure_code: str | None = None
    # every succeeded refund, when the caller listed them (None: not known, only the total)
    refunds: tuple[PspRefund, ...] | None = None


def view_of(obj: Mapping[str, Any], refunds: Sequence[Mapping[str, Any]] | None = None) -> PspView:
    """Read a PaymentIntent or a Charge (as JSON), and optionally its refunds, into a view.

    Examples:
        >>> view_of({"object": "charge", "captured": True, "amount_captured": 3000,
        ...          "amount_refunded": 1000, "payment_intent": "pi_1"}).status
        'succeeded'
    """
    if obj.get("object") == "charge":
        captured = bool(obj.get("captured"))
        return PspView(
            status="succeeded" if captured else None,
            amount_captured=int(obj["amount_captured"]) if captured else None,
            amount_refunded=int(obj.get("amount_refunded") or 0),
            intent_id=obj.get("payment_intent"),
            refunds=None,
        )
    listed = (
        tuple(
            sorted(
                (PspRefund.of(r) for r in refunds if r.get("status", "succeeded") == "succeeded"),
                key=lambda r: (r.created or 0, r.id),
            )
        )
        if refunds is not None
        else None
    )
    status = obj.get("status")
    charge = obj.get("latest_charge")
    fee = refunded = captured_at = available_on = None
    charge_id = charge if isinstance(charge, str) else None
    if isinstance(charge, Mapping):
        charge_id = charge.get("id")
        refunded = int(charge.get("amount_refunded") or 0)
        txn = charge.get("balance_transaction")
        if isinstance(txn, Mapping):
            fee, captured_at = int(txn["fee"]), int(txn["created"])
            available_on = int(txn["available_on"]) if txn.get("available_on") else None
    error = obj.get("last_payment_error") or {}
    if status == "requires_payment_method" and error:
        return PspView(status="failed", intent_id=obj.get("id"), failure_code=error.get("code"))
    mapped = {
        "requires_action": "requires_action",
        "succeeded": "succeeded",
        "requires_capture": "requires_capture",
        "canceled": "canceled",
    }
    return PspView(
        status=mapped.get(str(status)),
        amount_captured=int(obj["amount_received"]) if status == "succeeded" else None,
        amount_capturable=int(obj.get("amount_capturable") or 0) or None,
        amount_refunded=refunded,
        fee=fee,
        intent_id=obj.get("id"),
        charge_id=charge_id,
        captured_at=captured_at,
        available_on=available_on,
        refunds=listed,
    )


def events_to_reach(state: ps.PaymentState, view: PspView) -> list[tuple[str, dict[str, Any]]]:
    """The events (possibly none) that move ``state`` up to what ``view`` implies."""
    base: dict[str, Any] = {"psp_intent_id": view.intent_id} if view.intent_id else {}
    events: list[tuple[str, dict[str, Any]]] = []
    status = state.status
    if view.status == "requires_action" and status in ("processing", "unknown"):
        events.append((ps.ACTION_REQUIRED, base))
    elif view.status == "requires_capture" and status in OPEN:
        events.append(
            (ps.AUTHORIZED, {**base, "amount_capturable": view.amount_capturable or state.amount})
        )
    elif view.status == "succeeded" and (status in OPEN or status == "requires_capture"):
        captured = view.amount_captured if view.amount_captured is not None else state.amount
        booked = {
            "fee": view.fee,
            "psp_charge_id": view.charge_id,
            "psp_created": view.captured_at,
            "psp_available_on": view.available_on,
        }
        events.append((ps.CAPTURED, {**base, "amount": captured, **booked}))
        status = "succeeded"
    elif view.status == "failed" and status in OPEN:
        events.append((ps.FAILED, {**base, "code": view.failure_code or "card_declined"}))
    elif view.status == "canceled" and (status in OPEN or status == "requires_capture"):
        events.append((ps.CANCELED, base))
    if status in ("succeeded", "partially_refunded") and view.refunds:
        # Refunds booked before PSP ids were recorded (databases older than migration
        # 0004) are in amount_refunded but not in refund_ids: the oldest PSP refunds
        # that add up to them are those, already booked. Zero for everything newer.
        legacy = state.amount_refunded - sum(
            r.amount for r in view.refunds if r.id in state.refund_ids
        )
        for refund in view.refunds:
            if refund.id in state.refund_ids:
                continue
            if 0 < refund.amount <= legacy:
                legacy -= refund.amount
                continue
            data = {
                "amount": refund.amount,
                "refund_id": refund.refund_id or refund.id,
                "psp_refund_id": refund.id,
                "psp_created": refund.created,
            }
            events.append((ps.REFUNDED, data))
    return events


def would_advance(state: ps.PaymentState, view: PspView) -> bool:
    """True if ``view`` is ahead of ``state`` (so it is worth fetching the full object).

    A charge event carries only the refunded *total*; more than we booked means
    a refund we have not seen, to be listed by id.
    """
    if view.amount_refunded is not None and view.amount_refunded > state.amount_refunded:
        return True
    return bool(events_to_reach(state, view))

"""A payment's state machine, as a fold over its events. Pure: no I/O.

::

    processing ──screened (fraud rules; status unchanged)──▶ processing
    processing ──action required (3DS)──▶ requires_action ──(customer authenticates)──▶ …
    processing ──authorized (manual)──▶ requires_capture ──captured──▶ succeeded
        │   └──────captured (automatic)─────────────────────────────▶ succeeded
        ├──failed──▶ failed                       requires_capture ──canceled──▶ canceled
        ├──outcome unknown──▶ unknown ──(janitor: any of the above)──▶ …
        └──canceled (a cancel or an expiry won the race; so can unknown)──▶ canceled
    succeeded ──refunded (part)──▶ partially_refunded ──refunded (rest)──▶ refunded

The stored ``payments`` row is a projection of these events, written in the
same transaction; `fold` recomputes it from the events alone, which is how
the tests prove the two never disagree, and how an auditor replays history.

``PaymentScreened`` is the one event that moves no status: it records that
the fraud rules ran and what they decided (``decision``, ``rule``, ``value``,
``three_d_secure``), so "was this payment screened?" is a fact in the audit
trail, not an assumption about which code path a request happened to take.
The payment service screens until that event exists, and the 3DS choice it
holds is the one every later call to the PSP for this payment repeats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from payment_systems.errors import PaymentSystemsError

CREATED = "PaymentCreated"
AUTHORIZED = "PaymentAuthorized"
CAPTURED = "PaymentCaptured"
FAILED = "PaymentFailed"
CANCELED = "PaymentCanceled"
REFUNDED = "PaymentRefunded"
UNKNOWN = "PaymentOutcomeUnknown"
ACTION_REQUIRED = "PaymentActionRequired"
SCREENED = "PaymentScreened"  # the fraud rules ran: a record, not a status change

# status -> events allowed from it
TRANSITIONS: dict[str, set[str]] = {
    "new": {CREATED},
    # CANCELED from processing/unknown: a cancel (or the PSP's own expiry) can win while
    # our record of the authorization, or of a capture, is still missing or unknown.
    "processing": {SCREENED, AUTHORIZED, CAPTURED, FAILED, UNKNOWN, ACTION_REQUIRED, CANCELED},
    "unknown": {AUTHORIZED, CAPTURED, FAILED, UNKNOWN, ACTION_REQUIRED, CANCELED},
    "requires_action": {AUTHORIZED, CAPTURED, FAILED, CANCELED, UNKNOWN},
    "requires_capture": {CAPTURED, CANCELED, UNKNOWN},
    "succeeded": {REFUNDED},
    "partially_refunded": {REFUNDED},
    "refunded": set(),
    "failed": set(),
    "canceled": set(),
}


class InvalidTransition(PaymentSystemsError):
    """The event cannot happen in the payment's current status."""

    code = "payment_unexpected_state"
    http_status = 409


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What the events say about a payment."""

    status: str = "new"
    amount: int = 0
    currency: str = ""
    capture_method: str = "automatic"
    amount_capturable: int = 0
    amount_captured: int = 0
    amount_refunded: int = 0
    psp_intent_id: str | None = None
    failure_code: str | None = None
    version: int = 0
    fee: int = 0  # what the merchant pays on this payment (the PSP's fee, passed through)
    refund_ids: frozenset[str] = frozenset()  # the PSP refunds already booked


def apply(state: PaymentState, event_type: str, data: Mapping[str, Any]) -> PaymentState:
    """The state after one more event; raises `InvalidTransition` for an impossible one."""
    if event_type not in TRANSITIONS.get(state.status, set()):
        raise InvalidTransition(
            f"a payment in status {state.status!r} cannot take event {event_type}",
            status=state.status,
        )
    version = state.version + 1
    intent = data.get("psp_intent_id", state.psp_intent_id)
    if event_type == CREATED:
        return PaymentState(
            status="processing",
            amount=int(data["amount"]),
            currency=str(data["currency"]),
            capture_method=str(data.get("capture_method", "automatic")),
            version=version,
        )
    if event_type == AUTHORIZED:
        capturable = int(data.get("amount_capturable", state.amount))
        return replace(
            state, status="requires_capture", amount_capturable=capturable,
            psp_intent_id=intent, version=version,
        )  # fmt: skip
    if event_type == CAPTURED:
        return replace(
            state, status="succeeded", amount_captured=int(data["amount"]), amount_capturable=0,
            psp_intent_id=intent, version=version, fee=int(data.get("fee") or 0),
        )  # fmt: skip
    if event_type == FAILED:
        return replace(
            state, status="failed", failure_code=str(data.get("code")), psp_intent_id=intent,
            version=version,
        )  # fmt: skip
    if event_type == CANCELED:
        return replace(state, status="canceled", amount_capturable=0, version=version)
    if event_type == UNKNOWN:
        return replace(state, status="unknown", version=version)
    if event_type == ACTION_REQUIRED:
        return replace(state, status="requires_action", psp_intent_id=intent, version=version)
    if event_type == SCREENED:  # history, not state: only the version moves
        return replace(state, version=version)
    # REFUNDED: once per PSP refund, never past what was captured
    psp_refund = data.get("psp_refund_id")
    if psp_refund and psp_refund in state.refund_ids:
        raise InvalidTransition(f"refund {psp_refund} is already booked", status=state.status)
    refunded = state.amount_refunded + int(data["amount"])
    if refunded > state.amount_captured:
        raise InvalidTransition(
            f"refunds would total {refunded}, more than the {state.amount_captured} captured"
        )
    status = "refunded" if refunded == state.amount_captured else "partially_refunded"
    ids = state.refund_ids | {psp_refund} if psp_refund else state.refund_ids
    return replace(state, status=status, amount_refunded=refunded, version=version, refund_ids=ids)


def fold(events: Iterable[tuple[str, Mapping[str, Any]]]) -> PaymentState:
    """Replay events from the start.

    Examples:
        >>> state = fold([
        ...     ("PaymentCreated", {"amount": 5000, "currency": "USD", "capture_method": "manual"}),
        ...     ("PaymentAuthorized", {"psp_intent_id": "pi_1"}),
        ...     ("PaymentCaptured", {"amount": 3000}),
        ...     ("PaymentRefunded", {"amount": 1000}),
        ... ])
        >>> state.status, state.amount_captured, state.amount_refunded
        ('partially_refunded', 3000, 1000)
    """
    state = PaymentState()
    for event_type, data in events:
        state = apply(state, event_type, data)
    return state

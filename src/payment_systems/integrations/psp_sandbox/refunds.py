"""Refunds: partial or full, never more than what was captured."""

from __future__ import annotations

from typing import Any

from payment_systems.integrations.psp_sandbox.balance import refund_balance_transaction
from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.forms import get_int, get_metadata, get_str
from payment_systems.integrations.psp_sandbox.payment_intents import reject_unknown
from payment_systems.integrations.psp_sandbox.store import Obj

REFUND_PARAMS = {"charge", "payment_intent", "amount", "reason", "metadata", "expand"}
REASONS = {None, "duplicate", "fraudulent", "requested_by_customer"}


def _charge_for(ctx: Ctx, params: dict[str, Any]) -> Obj:
    charge_id = get_str(params, "charge")
    intent_id = get_str(params, "payment_intent")
    if charge_id is None and intent_id is None:
        raise InvalidRequest(
            "One of the following params should be provided: charge, payment_intent"
        )
    if charge_id is None:
        intent = ctx.get("payment_intent", str(intent_id))
        if intent is None:
            raise NotFound("payment_intent", str(intent_id), "payment_intent")
        charge_id = intent["latest_charge"]
        if charge_id is None:
            raise InvalidRequest(
                f"PaymentIntent {intent_id} does not have a successful charge to refund.",
                param="payment_intent",
            )
    charge = ctx.get("charge", charge_id)
    if charge is None:
        raise NotFound("charge", charge_id, "charge")
    return charge


def create(ctx: Ctx, params: dict[str, Any]) -> Obj:
    """``POST /v1/refunds``; over-refunding is a 400 that names both amounts."""
    reject_unknown(params, REFUND_PARAMS)
    charge = _charge_for(ctx, params)
    if not charge["captured"]:
        raise InvalidRequest(
            f"Charge {charge['id']} has not been captured; cancel the PaymentIntent instead.",
            code="charge_not_captured" if charge["status"] == "succeeded" else "charge_failed",
        )
    remaining = charge["amount_captured"] - charge["amount_refunded"]
    if remaining == 0:
        raise InvalidRequest(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    amount = get_int(params, "amount")
    amount = remaining if amount is None else amount
    if amount < 1:
        raise InvalidRequest("Refund amount must be at least 1.", param="amount")
    if amount > remaining:
        raise InvalidRequest(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            param="amount",
            code="amount_too_large",
        )
    reason = get_str(params, "reason")
    if reason not in REASONS:
        raise InvalidRequest(f"Invalid reason: {reason}", param="reason")
    refund: Obj = {
        "id": ctx.new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge["id"],
        "created": ctx.now,
        "currency": charge["currency"],
        "metadata": get_metadata(params),
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "succeeded",
    }
    ctx.insert(refund, parent=charge["id"])
    txn = refund_balance_transaction(ctx, refund)
    refund["balance_transaction"] = txn["id"]
    ctx.save(refund)
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
    ctx.save(charge)
    ctx.emit("charge.refunded", charge)
    ctx.emit("refund.created", refund)
    return refund


def get(ctx: Ctx, refund_id: str) -> Obj:
    """``GET /v1/refunds/{id}``."""
    refund = ctx.get("refund", refund_id)
    if refund is None:
        raise NotFound("refund", refund_id)
    return refund

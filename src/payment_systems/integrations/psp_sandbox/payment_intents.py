"""PaymentIntents and their charges: create, confirm, capture, cancel.

The state machine follows Stripe's for cards::

    requires_payment_method ─confirm→ succeeded                 (automatic capture)
                            ─confirm→ requires_capture ─capture→ succeeded
                            ─confirm→ requires_action ─authenticate→ …
                            ─confirm (declined)→ requires_payment_method
    any open state ─cancel→ canceled

A successful capture creates the charge's balance transaction, with the fee
from `fees`, available two days later (T+2) for the daily payout.
"""

from __future__ import annotations

from typing import Any

from payment_systems.currencies import UnknownCurrency, minor_units
from payment_systems.integrations.psp_sandbox import cards
from payment_systems.integrations.psp_sandbox.balance import charge_balance_transaction
from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import CardDeclined, InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.forms import (
    get_bool,
    get_int,
    get_metadata,
    get_str,
)
from payment_systems.integrations.psp_sandbox.store import Obj

CREATE_PARAMS = {
    "amount", "currency", "payment_method", "confirm", "capture_method", "metadata",
    "description", "customer", "payment_method_types", "automatic_payment_methods",
    "return_url", "off_session", "statement_descriptor", "statement_descriptor_suffix",
    "receipt_email", "setup_future_usage", "expand", "confirmation_method",
    "error_on_requires_action", "use_stripe_sdk", "payment_method_options",
}  # fmt: skip
CONFIRM_PARAMS = {"payment_method", "return_url", "off_session", "expand", "capture_method"}
CAPTURE_PARAMS = {"amount_to_capture", "metadata", "expand", "final_capture"}
CANCEL_PARAMS = {"cancellation_reason", "expand"}
OPEN_STATES = {"requires_payment_method", "requires_confirmation", "requires_action"}
CANCELABLE = OPEN_STATES | {"requires_capture", "processing"}


def reject_unknown(params: dict[str, Any], allowed: set[str]) -> None:
    """Stripe refuses parameters it does not know; so do we (typos stay visible)."""
    for name in params:
        if name not in allowed:
            raise InvalidRequest(f"Received unknown parameter: {name}", param=name)


def _currency(params: dict[str, Any]) -> str:
    code = get_str(params, "currency", required=True)
    assert code is not None
    try:
        minor_units(code)
    except UnknownCurrency:
        raise InvalidRequest(
            f"Invalid currency: {code.lower()}. Stripe currently supports these currencies: "
            "usd, eur, gbp, jpy, ... (any ISO 4217 code with minor units in the sandbox)",
            param="currency",
        ) from None
    return code.lower()


def create(ctx: Ctx, params: dict[str, Any]) -> Obj:
    """``POST /v1/payment_intents``: a new intent, confirmed at once if ``confirm=true``."""
    reject_unknown(params, CREATE_PARAMS)
    amount = get_int(params, "amount", required=True)
    assert amount is not None
    if amount < 1:
        raise InvalidRequest("This value must be greater than or equal to 1.", param="amount")
    currency = _currency(params)
    capture_method = get_str(params, "capture_method") or "automatic"
    if capture_method not in ("automatic", "automatic_async", "manual"):
        raise InvalidRequest(f"Invalid capture_method: {capture_method}", param="capture_method")
    payment_method = get_str(params, "payment_method")
    pi_id = ctx.new_id("pi")
    intent: Obj = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": f"{pi_id}_secret_{ctx.new_id('cs')[3:]}",
        "confirmation_method": "automatic",
        "created": ctx.now,
        "currency": currency,
        "description": get_str(params, "description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": get_metadata(params),
        "next_action": None,
        "payment_method": payment_method,
        "payment_method_options": {"card": {"request_three_d_secure": _three_ds_request(params)}},
        "payment_method_types": ["card"],
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
    }
    ctx.insert(intent)
    ctx.emit("payment_intent.created", intent)
    if get_bool(params, "confirm"):
        return _confirm(ctx, intent, payment_method)
    return intent


def _three_ds_request(params: dict[str, Any]) -> str:
    options = params.get("payment_method_options") or {}
    card = options.get("card") if isinstance(options, dict) else None
    value = card.get("request_three_d_secure", "automatic") if isinstance(card, dict) else None
    value = value or "automatic"
    if value not in ("automatic", "any", "challenge"):
        raise InvalidRequest(
            "Invalid payment_method_options[card][request_three_d_secure]: must be one of "
            "automatic, any, challenge",
            param="payment_method_options[card][request_three_d_secure]",
        )
    return str(value)


def get(ctx: Ctx, intent_id: str) -> Obj:
    """``GET /v1/payment_intents/{id}``."""
    intent = ctx.get("payment_intent", intent_id)
    if intent is None:
        raise NotFound("payment_intent", intent_id, "intent")
    return intent


def confirm(ctx: Ctx, intent_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/payment_intents/{id}/confirm``."""
    reject_unknown(params, CONFIRM_PARAMS)
    intent = get(ctx, intent_id)
    if intent["status"] not in OPEN_STATES:
        raise InvalidRequest(
            f"This PaymentIntent's status is {intent['status']}; it cannot be confirmed.",
            code="payment_intent_unexpected_state",
        )
    return _confirm(ctx, intent, get_str(params, "payment_method") or intent["payment_method"])


def _confirm(ctx: Ctx, intent: Obj, payment_method: str | None) -> Obj:
    if not payment_method:
        raise InvalidRequest(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            param="payment_method",
            code="payment_intent_unexpected_state",
        )
    card = cards.lookup(payment_method)
    if card is None:
        raise InvalidRequest(
            f"No such PaymentMethod: '{payment_method}'", "payment_method", code="resource_missing"
        )
    intent["payment_method"] = payment_method
    requested = intent["payment_method_options"]["card"]["request_three_d_secure"]
    challenge = card.outcome == "requires_action" or requested in ("any", "challenge")
    if challenge and intent["status"] != "requires_action":
        intent["status"] = "requires_action"
        intent["next_action"] = {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "source": payment_method},
        }
        ctx.save(intent)
        ctx.emit("payment_intent.requires_action", intent)
        return intent
    if card.outcome == "declined":
        return _decline(ctx, intent, card)
    return authorize(ctx, intent, card)


def authorize(
    ctx: Ctx, intent: Obj, card: cards.SandboxCard, *, authenticated: bool = False
) -> Obj:
    """The card network said yes: create the charge, and capture it unless manual."""
    charge = _new_charge(ctx, intent, card, status="succeeded", authenticated=authenticated)
    intent.update(latest_charge=charge["id"], next_action=None, last_payment_error=None)
    if intent["capture_method"] == "manual":
        intent.update(status="requires_capture", amount_capturable=intent["amount"])
        ctx.save(intent)
        ctx.emit("charge.succeeded", charge)
        ctx.emit("payment_intent.amount_capturable_updated", intent)
        return intent
    return _capture(ctx, intent, charge, intent["amount"])


def _decline(ctx: Ctx, intent: Obj, card: cards.SandboxCard) -> Obj:
    charge = _new_charge(ctx, intent, card, status="failed")
    error = {
        "type": "card_error",
        "code": card.code,
        "decline_code": card.decline_code,
        "message": card.message,
        "charge": charge["id"],
        "payment_method": {"id": intent["payment_method"], "object": "payment_method"},
    }
    intent.update(
        status="requires_payment_method",
        latest_charge=charge["id"],
        last_payment_error=error,
        next_action=None,
    )
    ctx.save(intent)
    ctx.emit("charge.failed", charge)
    ctx.emit("payment_intent.payment_failed", intent)
    extra = {k: error[k] for k in ("decline_code", "charge")} | {"payment_intent": intent}
    raise CardDeclined(card.message or cards.DECLINED, code=card.code, extra=extra)


def _new_charge(
    ctx: Ctx, intent: Obj, card: cards.SandboxCard, *, status: str, authenticated: bool = False
) -> Obj:
    charge: Obj = {
        "id": ctx.new_id("ch"),
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "captured": False,
        "created": ctx.now,
        "currency": intent["currency"],
        "disputed": False,
        "failure_code": card.code if status == "failed" else None,
        "failure_message": card.message if status == "failed" else None,
        "livemode": False,
        "metadata": intent["metadata"],
        "outcome": {
            "network_status": "declined_by_network"
            if status == "failed"
            else "approved_by_network",
            "reason": card.decline_code,
            "type": "issuer_declined" if status == "failed" else "authorized",
        },
        "paid": status == "succeeded",
        "payment_intent": intent["id"],
        "payment_method": intent["payment_method"],
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": card.brand,
                "last4": card.last4,
                "fingerprint": card.fingerprint,
                "checks": {
                    "address_line1_check": "pass",
                    "address_postal_code_check": "pass",
                    "cvc_check": "pass",
                },
                "three_d_secure": {
                    "authentication_flow": "challenge",
                    "result": "authenticated",
                    "version": "2.2.0",
                }
                if authenticated
                else None,
            },
        },
        "refunded": False,
        "status": status,
    }
    return ctx.insert(charge, parent=intent["id"])


def capture(ctx: Ctx, intent_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/payment_intents/{id}/capture``, partial with ``amount_to_capture``."""
    reject_unknown(params, CAPTURE_PARAMS)
    intent = get(ctx, intent_id)
    if intent["status"] != "requires_capture":
        raise InvalidRequest(
            f"This PaymentIntent could not be captured because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
            "may be captured: requires_capture.",
            code="payment_intent_unexpected_state",
        )
    amount = get_int(params, "amount_to_capture")
    amount = intent["amount_capturable"] if amount is None else amount
    if not 1 <= amount <= intent["amount_capturable"]:
        raise InvalidRequest(
            f"The amount to capture ({amount}) must be between 1 and the capturable amount "
            f"({intent['amount_capturable']}).",
            param="amount_to_capture",
            code="amount_too_large",
        )
    charge = ctx.get("charge", intent["latest_charge"])
    assert charge is not None
    intent["metadata"].update(get_metadata(params))
    return _capture(ctx, intent, charge, amount)


def _capture(ctx: Ctx, intent: Obj, charge: Obj, amount: int) -> Obj:
    txn = charge_balance_transaction(ctx, charge, amount)
    charge.update(
        amount_captured=amount, captured=True, balance_transaction=txn["id"], status="succeeded"
    )
    ctx.save(charge)
    intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
    ctx.save(intent)
    ctx.emit(
        "charge.captured" if intent["capture_method"] == "manual" else "charge.succeeded", charge
    )
    ctx.emit("payment_intent.succeeded", intent)
    return intent


def cancel(ctx: Ctx, intent_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/payment_intents/{id}/cancel``: releases an uncaptured authorization."""
    reject_unknown(params, CANCEL_PARAMS)
    intent = get(ctx, intent_id)
    if intent["status"] not in CANCELABLE:
        raise InvalidRequest(
            f"You cannot cancel this PaymentIntent because it has a status of "
            f"{intent['status']}. Only a PaymentIntent with one of the following statuses may "
            "be canceled: requires_payment_method, requires_capture, requires_confirmation, "
            "requires_action, processing.",
            code="payment_intent_unexpected_state",
        )
    intent.update(
        status="canceled",
        canceled_at=ctx.now,
        cancellation_reason=get_str(params, "cancellation_reason"),
        amount_capturable=0,
        next_action=None,
    )
    ctx.save(intent)
    ctx.emit("payment_intent.canceled", intent)
    return intent


def authenticate(ctx: Ctx, intent_id: str, succeed: bool) -> Obj:
    """Sandbox-only: the customer completes (or fails) the 3DS challenge."""
    intent = get(ctx, intent_id)
    if intent["status"] != "requires_action":
        raise InvalidRequest(f"PaymentIntent {intent_id} is not waiting for authentication.")
    card = cards.lookup(intent["payment_method"])
    assert card is not None
    if succeed and card.outcome == "declined":
        return _decline(ctx, intent, card)  # authenticated, then the issuer still says no
    if succeed:
        return authorize(ctx, intent, card, authenticated=True)
    intent.update(
        status="requires_payment_method",
        next_action=None,
        last_payment_error={
            "type": "invalid_request_error",
            "code": "payment_intent_authentication_failure",
            "message": "The provided PaymentMethod has failed authentication.",
        },
    )
    ctx.save(intent)
    ctx.emit("payment_intent.payment_failed", intent)
    return intent

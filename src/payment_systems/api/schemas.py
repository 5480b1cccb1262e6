"""Request bodies and response views of the Payments API.

Validation is strict on purpose: ``"amount": 10.5`` or ``"amount": "1050"``
is refused, never coerced, because a payments API that guesses what the
client meant by an amount will one day guess wrong.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from payment_systems.database.models import Payment
from payment_systems.money import Money

MAX_AMOUNT = 10**12  # minor units; far above any card payment, far below BIGINT


class CreatePaymentBody(BaseModel):
    """``POST /v1/payments``."""

    model_config = ConfigDict(extra="forbid")

    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT, description="Minor units: 1050 is $10.50")
    currency: StrictStr = Field(min_length=3, max_length=3, description="ISO 4217, e.g. usd")
    payment_method: StrictStr = Field(min_length=1, max_length=255)
    capture_method: Literal["automatic", "manual"] = "automatic"
    description: StrictStr | None = Field(default=None, max_length=1000)
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=50)
    customer_ip: StrictStr | None = Field(
        default=None, max_length=45,
        description="The shopper's IP address, for the velocity rules (like Radar's ip_address). "
        "Our API is called server to server, so the connection's own address is the "
        "merchant's server, and counting cards per that address would pool every shopper",
    )  # fmt: skip
    risk_score: StrictInt | None = Field(
        default=None, ge=0, le=99,
        description="Your fraud model's score, 0-99 (like Stripe Radar's); at or above the 3DS "
        "threshold the customer is asked to authenticate",
    )  # fmt: skip


class CaptureBody(BaseModel):
    """``POST /v1/payments/{id}/capture``: omit ``amount`` to capture everything."""

    model_config = ConfigDict(extra="forbid")

    amount: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT)


class RefundBody(BaseModel):
    """``POST /v1/refunds``: omit ``amount`` to refund what is left."""

    model_config = ConfigDict(extra="forbid")

    payment: StrictStr = Field(min_length=1, max_length=40)
    amount: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT)


def payment_view(payment: Payment) -> dict[str, Any]:
    """The public JSON shape of a payment."""
    return {
        "id": payment.id,
        "object": "payment",
        "amount": payment.amount_minor,
        "currency": payment.currency.lower(),
        "status": payment.status,
        "capture_method": payment.capture_method,
        "payment_method": payment.payment_method,
        "description": payment.description,
        "metadata": payment.metadata_,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
        "fee": payment.fee_minor or 0,  # what the merchant pays: the PSP's fee, passed through
        "net": payment.amount_captured - payment.amount_refunded - (payment.fee_minor or 0),
        "failure_code": payment.failure_code,
        "psp_payment_intent": payment.psp_intent_id,
        "next_action": {"type": "three_d_secure", "psp_payment_intent": payment.psp_intent_id}
        if payment.status == "requires_action"
        else None,
        "created": int(payment.created_at.replace(tzinfo=UTC).timestamp()),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Canonical JSON bytes: what is sent first is exactly what a replay sends."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def money(amount: int, currency: str) -> Money:
    return Money(amount, currency)

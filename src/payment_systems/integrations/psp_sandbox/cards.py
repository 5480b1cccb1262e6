"""Stripe's test payment methods and what each one does in the sandbox.

The ids are the ones Stripe documents for test mode, so the same test code
runs against the sandbox and against Stripe itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["succeeded", "declined", "requires_action"]


@dataclass(frozen=True, slots=True)
class SandboxCard:
    """A test payment method: card details and the outcome of confirming it."""

    brand: str
    last4: str
    outcome: Outcome = "succeeded"
    code: str | None = None  # Stripe error code on decline
    decline_code: str | None = None
    message: str | None = None
    dispute: str | None = None  # a dispute with this reason opens when the clock next advances
    inquiry: bool = False  # ...as an inquiry (warning_needs_response) rather than a chargeback

    @property
    def fingerprint(self) -> str:
        """A stable card fingerprint (Stripe's is per card number, per account)."""
        return f"fp_{self.brand}_{self.last4}"


DECLINED = "Your card was declined."

TEST_CARDS: dict[str, SandboxCard] = {
    "pm_card_visa": SandboxCard("visa", "4242"),
    "pm_card_visa_debit": SandboxCard("visa", "5556"),
    "pm_card_mastercard": SandboxCard("mastercard", "4444"),
    "pm_card_amex": SandboxCard("amex", "8431"),
    "pm_card_chargeDeclined": SandboxCard(
        "visa", "0002", "declined", "card_declined", "generic_decline", DECLINED
    ),
    "pm_card_chargeDeclinedInsufficientFunds": SandboxCard(
        "visa", "9995", "declined", "card_declined", "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedFraudulent": SandboxCard(
        "visa", "0019", "declined", "card_declined", "fraudulent", DECLINED
    ),
    "pm_card_chargeDeclinedLostCard": SandboxCard(
        "visa", "9987", "declined", "card_declined", "lost_card", DECLINED
    ),
    "pm_card_chargeDeclinedExpiredCard": SandboxCard(
        "visa", "0069", "declined", "expired_card", "expired_card", "Your card has expired."
    ),
    "pm_card_createDispute": SandboxCard("visa", "0259", dispute="fraudulent"),
    "pm_card_createDisputeProductNotReceived": SandboxCard(
        "visa", "2685", dispute="product_not_received"
    ),
    "pm_card_createDisputeInquiry": SandboxCard("visa", "1976", dispute="fraudulent", inquiry=True),
    "pm_card_threeDSecure2Required": SandboxCard("visa", "3220", "requires_action"),
    "pm_card_authenticationRequired": SandboxCard("visa", "3184", "requires_action"),
}  # fmt: skip


def lookup(payment_method: str) -> SandboxCard | None:
    """The test card for a payment method id, or None if the sandbox does not know it."""
    return TEST_CARDS.get(payment_method)

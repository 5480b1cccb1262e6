"""Dispute evidence, assembled from our own records for each reason code.

"What evidence has the highest win rate?" Proof that the cardholder took
part: delivery to their address with a signature, their logins or downloads,
their own messages, their earlier payments that they never disputed (Visa's
Compelling Evidence 3.0 rests on exactly that). A receipt alone proves only
that we charged, which the issuer already knows.

"How to automate evidence gathering?" Record it at checkout, when it is
free: the customer's email and IP, what was bought, the carrier and the
tracking number, the 3DS and AVS/CVC results. Then a dispute needs no
human: `assemble` maps those records to Stripe's evidence fields, keeping
only the fields that answer the claim's reason (an issuer reading a
"product not received" case wants tracking, not a refund policy).

`assemble` is pure. `records_for` does the reading: our database for the
payment and the customer's history, the PSP for the charge's checks.
The score and the predicted outcome use the same documented rule the
sandbox decides with (`payment_systems.integrations.psp_sandbox.disputes`),
so a prediction here is the outcome there; against a real network the rule
is a stand-in for a model trained on your own results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from payment_systems.database.models import DisputeRecord, Payment
from payment_systems.integrations.psp_sandbox.disputes import decide
from payment_systems.money import Money

COMMON = ("customer_email_address", "customer_name", "product_description", "receipt")
REASON_FIELDS: dict[str, tuple[str, ...]] = {
    "fraudulent": (
        "access_activity_log", "billing_address", "customer_purchase_ip", "customer_signature",
        "shipping_tracking_number", "shipping_carrier", "shipping_date",
    ),
    "product_not_received": (
        "shipping_tracking_number", "shipping_carrier", "shipping_date", "shipping_address",
        "customer_signature", "customer_communication",
    ),
    "duplicate": ("duplicate_charge_explanation", "duplicate_charge_id"),
    "subscription_canceled": (
        "cancellation_policy", "cancellation_rebuttal", "access_activity_log",
    ),
    "credit_not_processed": ("refund_policy", "refund_refusal_explanation"),
    "product_unacceptable": ("refund_policy", "customer_communication", "product_description"),
    "general": ("customer_communication", "access_activity_log", "refund_policy"),
}  # fmt: skip
SUCCESSFUL = ("succeeded", "partially_refunded", "refunded")
SUCCESSFUL_SETTLED = ("succeeded", "partially_refunded")


@dataclass(frozen=True, slots=True)
class Policies:
    """What the merchant publishes at checkout; evidence for policy-based claims."""

    refund_policy: str = "Refunds within 30 days of delivery; shown and accepted at checkout."
    cancellation_policy: str = "Cancel any time before the renewal date from account settings."


@dataclass(frozen=True, slots=True)
class Records:
    """Everything we hold about one disputed payment, gathered before assembly."""

    payment_id: str
    amount: Money
    created: datetime
    metadata: Mapping[str, str]
    checks: Mapping[str, str | None] = field(default_factory=dict)  # AVS/CVC from the charge
    three_d_secure: str | None = None  # "authenticated" when the cardholder passed 3DS
    prior_undisputed: tuple[tuple[str, datetime], ...] = ()  # same customer, never disputed
    policies: Policies = Policies()


@dataclass(frozen=True, slots=True)
class Evidence:
    """The evidence for one dispute, its score and the outcome the rule predicts."""

    reason: str
    fields: dict[str, str]
    score: int
    predicted: str  # won | lost
    missing: tuple[str, ...]  # fields that would have helped and that we did not have

    @property
    def strength(self) -> str:
        return "strong" if self.predicted == "won" else "weak"


def _candidates(records: Records) -> dict[str, str | None]:
    meta = records.metadata
    checks = records.checks
    passed = [name for name, result in checks.items() if result == "pass"]
    activity = []
    if records.three_d_secure == "authenticated":
        activity.append("The cardholder authenticated this payment with 3D Secure.")
    if records.prior_undisputed:
        earlier = ", ".join(f"{pid} ({when:%Y-%m-%d})" for pid, when in records.prior_undisputed)
        activity.append(f"Earlier payments by the same customer, never disputed: {earlier}.")
    if meta.get("access_log"):
        activity.append(meta["access_log"])
    order = meta.get("order_id")
    return {
        "customer_email_address": meta.get("customer_email"),
        "customer_name": meta.get("customer_name"),
        "customer_purchase_ip": meta.get("ip"),
        "product_description": meta.get("product"),
        "receipt": f"Receipt for {records.payment_id}: {records.amount} on "
        f"{records.created:%Y-%m-%d}.",
        "billing_address": "AVS and CVC checks passed: " + ", ".join(sorted(passed))
        if passed
        else None,
        "access_activity_log": " ".join(activity) or None,
        "shipping_carrier": meta.get("shipping_carrier"),
        "shipping_tracking_number": meta.get("tracking_number"),
        "shipping_date": meta.get("shipping_date"),
        "shipping_address": meta.get("shipping_address"),
        "customer_signature": meta.get("delivery_signature"),
        "customer_communication": meta.get("customer_messages"),
        "duplicate_charge_explanation": (
            f"Order {order} was charged once, by {records.payment_id}; every charge is keyed "
            "by an idempotency key, so a retry of the same order cannot charge twice."
        )
        if order
        else None,
        "duplicate_charge_id": meta.get("other_charge"),
        "cancellation_policy": records.policies.cancellation_policy,
        "cancellation_rebuttal": (
            f"No cancellation request is on record; the service was last used on "
            f"{meta['last_used']}."
        )
        if meta.get("last_used")
        else None,
        "refund_policy": records.policies.refund_policy,
        "refund_refusal_explanation": meta.get("refund_refusal"),
    }


def assemble(reason: str, records: Records) -> Evidence:
    """The evidence we can send for a ``reason`` dispute, from ``records`` alone.

    Examples:
        >>> from datetime import datetime
        >>> records = Records("pay_1", Money(7500, "USD"), datetime(2026, 11, 2),
        ...     {"customer_email": "ana@example.com", "tracking_number": "1Z999",
        ...      "shipping_carrier": "UPS", "delivery_signature": "signature.png"})
        >>> evidence = assemble("product_not_received", records)
        >>> evidence.predicted, evidence.score, sorted(evidence.fields)[:3]
        ('won', 5, ['customer_email_address', 'customer_signature', 'receipt'])
    """
    wanted = REASON_FIELDS.get(reason, REASON_FIELDS["general"]) + COMMON
    candidates = _candidates(records)
    fields = {name: value for name in wanted if (value := candidates.get(name))}
    missing = tuple(name for name in wanted if name not in fields)
    predicted, score = decide(dict(fields), reason)
    return Evidence(reason, fields, score, predicted, missing)


def records_for(
    session: Session, payment: Payment, charge: Mapping[str, object], policies: Policies
) -> Records:
    """Gather a payment's records: ours from ``session``, the checks from the PSP's charge."""
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    card = card if isinstance(card, Mapping) else {}
    checks = card.get("checks") if isinstance(card.get("checks"), Mapping) else {}
    secure = card.get("three_d_secure")
    email = payment.metadata_.get("customer_email")
    prior: list[tuple[str, datetime]] = []
    if email:
        disputed = sa.select(DisputeRecord.payment_id)
        earlier = session.scalars(
            sa.select(Payment)
            .where(
                Payment.merchant_id == payment.merchant_id,
                Payment.created_at < payment.created_at,
                Payment.status.in_(SUCCESSFUL_SETTLED),
                Payment.id.not_in(disputed),
            )
            .order_by(Payment.created_at.desc())
            .limit(500)
        )
        prior = [
            (p.id, p.created_at) for p in earlier if p.metadata_.get("customer_email") == email
        ]
    return Records(
        payment.id,
        Money(payment.amount_captured or payment.amount_minor, payment.currency),
        payment.created_at,
        {str(k): str(v) for k, v in payment.metadata_.items()},
        {str(k): (str(v) if v is not None else None) for k, v in dict(checks or {}).items()},
        str(secure.get("result")) if isinstance(secure, Mapping) else None,
        tuple(prior[:5]),
        policies,
    )

"""Evidence assembly: the right fields for each reason, from our own records alone."""

from __future__ import annotations

from datetime import datetime

from payment_systems.chargebacks.evidence import Records, assemble
from payment_systems.money import Money

WHEN = datetime(2026, 11, 2, 14, 30)


def _records(**metadata: str) -> Records:
    return Records("pay_1", Money(7_500, "USD"), WHEN, metadata)


def test_a_fraud_claim_cites_3ds_and_the_customers_undisputed_history() -> None:
    records = Records(
        "pay_1", Money(7_500, "USD"), WHEN, {"customer_email": "ana@example.com"},
        checks={"cvc_check": "pass", "address_postal_code_check": "pass"},
        three_d_secure="authenticated",
        prior_undisputed=(("pay_0", datetime(2026, 6, 1)), ("pay_00", datetime(2026, 3, 9))),
    )  # fmt: skip
    evidence = assemble("fraudulent", records)
    log = evidence.fields["access_activity_log"]
    assert "3D Secure" in log and "pay_0 (2026-06-01)" in log and "pay_00" in log
    assert evidence.fields["billing_address"].startswith("AVS and CVC checks passed")


def test_a_product_not_received_claim_without_tracking_is_predicted_lost_and_says_why() -> None:
    evidence = assemble("product_not_received", _records(customer_email="ana@example.com"))
    assert evidence.predicted == "lost"
    assert "shipping_tracking_number" in evidence.missing


def test_fields_that_do_not_answer_the_reason_are_left_out() -> None:
    evidence = assemble("product_not_received", _records(tracking_number="1Z", ip="203.0.113.9"))
    assert "refund_policy" not in evidence.fields
    assert "customer_purchase_ip" not in evidence.fields  # relevant to fraud, not to delivery


def test_a_duplicate_claim_is_answered_with_the_idempotency_guarantee() -> None:
    evidence = assemble("duplicate", _records(order_id="ord_42"))
    assert "ord_42" in evidence.fields["duplicate_charge_explanation"]
    assert "idempotency key" in evidence.fields["duplicate_charge_explanation"]


def test_a_subscription_claim_uses_the_policy_and_the_last_use() -> None:
    evidence = assemble("subscription_canceled", _records(last_used="2026-11-20"))
    assert "2026-11-20" in evidence.fields["cancellation_rebuttal"]
    assert evidence.fields["cancellation_policy"]


def test_an_unknown_reason_falls_back_to_general_evidence_rather_than_failing() -> None:
    evidence = assemble("bank_cannot_process", _records(customer_messages="thanks, arrived!"))
    assert evidence.fields["customer_communication"] == "thanks, arrived!"


def test_strength_follows_the_documented_rule() -> None:
    strong = assemble("fraudulent", _records(
        tracking_number="1Z", delivery_signature="sig.png", customer_email="a@b.c"
    ))  # fmt: skip
    weak = assemble("fraudulent", _records())
    assert (strong.strength, weak.strength) == ("strong", "weak")
    assert strong.score > weak.score

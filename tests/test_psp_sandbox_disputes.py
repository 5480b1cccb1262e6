"""Sandbox disputes beyond the basic chargeback: reasons, inquiries, prevention, 3DS."""

from __future__ import annotations

from typing import Any

import stripe

from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.psp_sandbox.control import advance_clock, authenticate
from payment_systems.integrations.psp_sandbox.disputes import decide

DAY = 86_400


def _advance(sandbox: SandboxServer, key: str, seconds: int) -> dict[str, Any]:
    return advance_clock(sandbox.url, key, seconds)


def _authenticate(sandbox: SandboxServer, key: str, intent_id: str) -> dict[str, Any]:
    return authenticate(sandbox.url, key, intent_id)


def _pay(client: stripe.StripeClient, pm: str, **extra: Any) -> stripe.PaymentIntent:
    params: Any = {"amount": 7500, "currency": "usd", "payment_method": pm, "confirm": True}
    return client.v1.payment_intents.create(params={**params, **extra})


def _opened(
    client: stripe.StripeClient, sandbox: SandboxServer, key: str, pm: str
) -> stripe.Dispute:
    _pay(client, pm)
    [dispute_id] = _advance(sandbox, key, 60)["disputes_opened"]
    return client.v1.disputes.retrieve(dispute_id)


def test_each_dispute_test_card_opens_a_dispute_with_its_reason(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    dispute = _opened(
        stripe_client, psp_sandbox, psp_key, "pm_card_createDisputeProductNotReceived"
    )
    assert (dispute.status, dispute.reason) == ("needs_response", "product_not_received")


def test_an_inquiry_moves_no_money_until_it_escalates(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    dispute = _opened(stripe_client, psp_sandbox, psp_key, "pm_card_createDisputeInquiry")
    assert dispute.status == "warning_needs_response"
    assert list(dispute.balance_transactions) == []
    _advance(psp_sandbox, psp_key, 8 * DAY)  # nobody answered
    escalated = stripe_client.v1.disputes.retrieve(dispute.id)
    assert escalated.status == "needs_response"
    assert [t.amount for t in escalated.balance_transactions] == [-7500]


def test_an_answered_inquiry_with_strong_evidence_closes_as_a_warning(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    dispute = _opened(stripe_client, psp_sandbox, psp_key, "pm_card_createDisputeInquiry")
    evidence = {"access_activity_log": "login", "customer_signature": "s", "receipt": "r"}
    answered = stripe_client.v1.disputes.update(
        dispute.id, params={"evidence": evidence, "submit": True}
    )
    assert answered.status == "warning_under_review"
    _advance(psp_sandbox, psp_key, 2 * DAY)
    closed = stripe_client.v1.disputes.retrieve(dispute.id)
    assert closed.status == "warning_closed"
    assert list(closed.balance_transactions) == []  # an inquiry costs no fee


def test_a_fraud_claim_on_a_3ds_authenticated_charge_is_prevented_by_liability_shift(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    intent = _pay(
        stripe_client,
        "pm_card_createDispute",
        payment_method_options={"card": {"request_three_d_secure": "any"}},
    )
    assert intent.status == "requires_action"
    _authenticate(psp_sandbox, psp_key, intent.id)
    [dispute_id] = _advance(psp_sandbox, psp_key, 60)["disputes_opened"]
    dispute = stripe_client.v1.disputes.retrieve(dispute_id)
    assert dispute.status == "prevented"
    assert list(dispute.balance_transactions) == []


def test_a_claim_on_a_fully_refunded_charge_is_prevented(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    intent = _pay(stripe_client, "pm_card_createDispute")
    stripe_client.v1.refunds.create(params={"payment_intent": intent.id})
    [dispute_id] = _advance(psp_sandbox, psp_key, 60)["disputes_opened"]
    assert stripe_client.v1.disputes.retrieve(dispute_id).status == "prevented"


def test_requesting_3ds_challenges_even_a_frictionless_card_and_records_the_result(
    stripe_client: stripe.StripeClient, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    intent = _pay(
        stripe_client,
        "pm_card_visa",
        payment_method_options={"card": {"request_three_d_secure": "any"}},
    )
    assert intent.status == "requires_action"
    done = _authenticate(psp_sandbox, psp_key, intent.id)
    assert done["status"] == "succeeded"
    charge = stripe_client.v1.charges.retrieve(done["latest_charge"])
    assert charge.payment_method_details is not None
    card = charge.payment_method_details.card
    assert card is not None and card.three_d_secure is not None
    assert card.three_d_secure.result == "authenticated"


def test_a_product_not_received_claim_without_shipping_proof_is_lost_however_strong() -> None:
    strong = {"customer_signature": "s", "access_activity_log": "l", "customer_communication": "c"}
    assert decide(strong, "fraudulent") == ("won", 6)
    assert decide(strong, "product_not_received") == ("lost", 6)
    assert decide({**strong, "shipping_tracking_number": "1Z"}, "product_not_received")[0] == "won"

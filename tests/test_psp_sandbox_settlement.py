"""The sandbox clock: T+2 availability, daily payouts, and the dispute lifecycle."""

from __future__ import annotations

import httpx
import pytest
import stripe

from payment_systems.integrations.psp_sandbox.control import advance_clock
from payment_systems.integrations.psp_sandbox.disputes import decide

DAY = 86_400


_advance = advance_clock


def _pay(
    client: stripe.StripeClient, amount: int, pm: str = "pm_card_visa"
) -> stripe.PaymentIntent:
    return client.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method": pm, "confirm": True}
    )


def test_nothing_is_paid_out_before_funds_are_available(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    _pay(stripe_client, 1000)
    _advance(psp_sandbox.url, psp_key, 3600)  # type: ignore[attr-defined]
    assert stripe_client.v1.payouts.list().data == []


def test_a_payout_batches_every_available_transaction_and_matches_their_net(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    intents = [_pay(stripe_client, amount) for amount in (1000, 2500, 4000)]
    stripe_client.v1.refunds.create(params={"payment_intent": intents[0].id, "amount": 300})
    result = _advance(psp_sandbox.url, psp_key, 3 * DAY)  # type: ignore[attr-defined]
    [payout] = stripe_client.v1.payouts.list().data
    assert result["payouts"] == [payout.id]
    txns = stripe_client.v1.balance_transactions.list(
        params={"payout": payout.id, "limit": 100}
    ).data
    movements = [t for t in txns if t.type != "payout"]
    assert sorted(t.type for t in movements) == ["charge", "charge", "charge", "refund"]
    assert payout.amount == sum(t.net for t in movements)
    [own] = [t for t in txns if t.type == "payout"]
    assert own.amount == -payout.amount


def test_each_day_pays_out_only_what_became_available(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    _pay(stripe_client, 1000)
    _advance(psp_sandbox.url, psp_key, DAY)  # type: ignore[attr-defined]
    _pay(stripe_client, 2000)
    _advance(psp_sandbox.url, psp_key, 4 * DAY)  # type: ignore[attr-defined]
    payouts = stripe_client.v1.payouts.list().data
    assert sorted(p.amount for p in payouts) == [1000 - 59, 2000 - 88]


def test_a_dispute_opens_on_the_next_clock_advance(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    intent = _pay(stripe_client, 7500, "pm_card_createDispute")
    assert intent.status == "succeeded"
    result = _advance(psp_sandbox.url, psp_key, 60)  # type: ignore[attr-defined]
    [dispute_id] = result["disputes_opened"]  # type: ignore[misc]
    dispute = stripe_client.v1.disputes.retrieve(dispute_id)
    assert dispute.status == "needs_response"
    assert dispute.amount == 7500
    assert dispute.evidence_details.due_by > 0
    debit = list(dispute.balance_transactions)
    assert debit[0].amount == -7500 and debit[0].fee == 1500


def _open_dispute(client: stripe.StripeClient, url: str, key: str) -> str:
    _pay(client, 7500, "pm_card_createDispute")
    result = _advance(url, key, 60)
    return str(result["disputes_opened"][0])  # type: ignore[index]


def test_strong_evidence_wins_and_returns_the_amount_and_counter_fee_but_not_the_dispute_fee(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    dispute_id = _open_dispute(stripe_client, psp_sandbox.url, psp_key)  # type: ignore[attr-defined]
    evidence = {
        "shipping_tracking_number": "1Z999AA10123456784",
        "customer_signature": "signed-delivery.png",
        "receipt": "receipt.pdf",
    }
    submitted = stripe_client.v1.disputes.update(
        dispute_id, params={"evidence": evidence, "submit": True}
    )
    assert submitted.status == "under_review"
    _advance(psp_sandbox.url, psp_key, 2 * DAY)  # type: ignore[attr-defined]
    dispute = stripe_client.v1.disputes.retrieve(dispute_id)
    assert dispute.status == "won"
    amounts = [(t.amount, t.fee) for t in dispute.balance_transactions]
    assert amounts == [(-7500, 1500), (0, 1500), (7500, -1500)]  # withdrawal, counter, reversal
    assert sum(t.net for t in dispute.balance_transactions) == -1500  # the dispute fee stays


def test_evidence_is_accepted_only_once(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    dispute_id = _open_dispute(stripe_client, psp_sandbox.url, psp_key)  # type: ignore[attr-defined]
    stripe_client.v1.disputes.update(dispute_id, params={"evidence": {"receipt": "r.pdf"}})
    with pytest.raises(stripe.InvalidRequestError, match=r"only\s+once"):
        stripe_client.v1.disputes.update(dispute_id, params={"evidence": {"receipt": "again.pdf"}})


def test_weak_evidence_loses(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    dispute_id = _open_dispute(stripe_client, psp_sandbox.url, psp_key)  # type: ignore[attr-defined]
    stripe_client.v1.disputes.update(dispute_id, params={"evidence": {"receipt": "r.pdf"}})
    _advance(psp_sandbox.url, psp_key, 2 * DAY)  # type: ignore[attr-defined]
    assert stripe_client.v1.disputes.retrieve(dispute_id).status == "lost"


def test_an_unanswered_dispute_is_lost_after_its_deadline(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    dispute_id = _open_dispute(stripe_client, psp_sandbox.url, psp_key)  # type: ignore[attr-defined]
    _advance(psp_sandbox.url, psp_key, 8 * DAY)  # type: ignore[attr-defined]
    dispute = stripe_client.v1.disputes.retrieve(dispute_id)
    assert dispute.status == "lost" and dispute.evidence_details.past_due


def test_stripe_test_mode_evidence_words_decide_the_outcome() -> None:
    assert decide({"uncategorized_text": "winning_evidence"})[0] == "won"
    assert decide({"uncategorized_text": "losing_evidence", "receipt": "x"})[0] == "lost"


def test_advancing_the_clock_by_nonsense_is_a_clear_error(
    psp_sandbox: object, psp_key: str
) -> None:
    response = httpx.post(
        f"{psp_sandbox.url}/_sandbox/clock/advance",
        data={"seconds": -5},
        auth=(psp_key, ""),  # type: ignore[attr-defined]
    )
    assert response.status_code == 400
    assert "between 1 and" in response.json()["error"]["message"]

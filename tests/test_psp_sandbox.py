"""The official stripe SDK against the sandbox: payments, refunds, declines, idempotency."""

from __future__ import annotations

import pytest
import stripe

PI = dict[str, object]


def _pay(
    client: stripe.StripeClient, pm: str = "pm_card_visa", **extra: object
) -> stripe.PaymentIntent:
    params = {"amount": 2000, "currency": "usd", "payment_method": pm, "confirm": True, **extra}
    return client.v1.payment_intents.create(params=params)  # type: ignore[arg-type]


def test_create_and_confirm_succeeds_with_a_captured_charge(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = _pay(stripe_client, metadata={"order_id": "42"})
    assert intent.id.startswith("pi_")
    assert intent.status == "succeeded"
    assert intent.amount_received == 2000
    assert intent.metadata["order_id"] == "42"
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.captured and charge.amount_captured == 2000
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card.last4 == "4242"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payment_method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ],
)
def test_a_decline_raises_card_error_with_the_decline_code(
    stripe_client: stripe.StripeClient, payment_method: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as info:
        _pay(stripe_client, payment_method)
    assert info.value.code == code
    assert info.value.error is not None
    assert info.value.error.decline_code == decline_code
    assert info.value.http_status == 402
    intent = info.value.error.payment_intent
    assert intent is not None and intent.status == "requires_payment_method"


def test_an_idempotent_replay_returns_the_same_object(stripe_client: stripe.StripeClient) -> None:
    params = {"amount": 500, "currency": "eur", "payment_method": "pm_card_visa", "confirm": True}
    first = stripe_client.v1.payment_intents.create(
        params=params, options={"idempotency_key": "k-1"}
    )  # type: ignore[arg-type]
    again = stripe_client.v1.payment_intents.create(
        params=params, options={"idempotency_key": "k-1"}
    )  # type: ignore[arg-type]
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_client.v1.payment_intents.list().data) == 1


def test_a_replay_with_different_parameters_raises_idempotency_error(
    stripe_client: stripe.StripeClient,
) -> None:
    options = {"idempotency_key": "k-2"}
    stripe_client.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd"}, options=options
    )  # type: ignore[arg-type]
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        stripe_client.v1.payment_intents.create(
            params={"amount": 501, "currency": "usd"}, options=options
        )  # type: ignore[arg-type]


def test_a_declined_result_is_replayed_not_retried(stripe_client: stripe.StripeClient) -> None:
    params = {
        "amount": 700,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": True,
    }
    for _ in range(2):
        with pytest.raises(stripe.CardError):
            stripe_client.v1.payment_intents.create(params=params, options={"idempotency_key": "d"})  # type: ignore[arg-type]
    assert len(stripe_client.v1.charges.list().data) == 1  # one failed charge, not two


def test_a_validation_error_is_not_stored_so_the_key_can_be_reused(
    stripe_client: stripe.StripeClient,
) -> None:
    options = {"idempotency_key": "fix-me"}
    with pytest.raises(stripe.InvalidRequestError, match="Invalid currency"):
        stripe_client.v1.payment_intents.create(
            params={"amount": 5, "currency": "xyz"}, options=options
        )  # type: ignore[arg-type]
    fixed = stripe_client.v1.payment_intents.create(
        params={"amount": 5, "currency": "usd"}, options=options
    )  # type: ignore[arg-type]
    assert fixed.status == "requires_payment_method"


def test_an_unknown_parameter_is_rejected_by_name(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.payment_intents.create(params={"amount": 5, "currency": "usd", "amout": 1})  # type: ignore[typeddict-unknown-key]
    assert info.value.param == "amout"


def test_a_live_key_is_refused(psp_sandbox: object) -> None:
    client = stripe.StripeClient(
        "sk_live_0000000000",
        base_addresses={"api": psp_sandbox.url},
        max_network_retries=0,  # type: ignore[attr-defined]
    )
    with pytest.raises(stripe.AuthenticationError, match="sk_test_"):
        client.v1.payment_intents.list()


def test_manual_capture_can_capture_part_of_the_authorization(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = _pay(stripe_client, capture_method="manual")
    assert intent.status == "requires_capture" and intent.amount_capturable == 2000
    captured = stripe_client.v1.payment_intents.capture(
        intent.id, params={"amount_to_capture": 1500}
    )
    assert captured.status == "succeeded" and captured.amount_received == 1500
    charge = stripe_client.v1.charges.retrieve(
        str(captured.latest_charge), params={"expand": ["balance_transaction"]}
    )
    txn = charge.balance_transaction
    assert txn.amount == 1500  # type: ignore[union-attr]


def test_capturing_more_than_authorized_is_refused(stripe_client: stripe.StripeClient) -> None:
    intent = _pay(stripe_client, capture_method="manual")
    with pytest.raises(stripe.InvalidRequestError, match="capturable amount"):
        stripe_client.v1.payment_intents.capture(intent.id, params={"amount_to_capture": 2001})


def test_cancel_releases_an_uncaptured_authorization(stripe_client: stripe.StripeClient) -> None:
    intent = _pay(stripe_client, capture_method="manual")
    canceled = stripe_client.v1.payment_intents.cancel(intent.id)
    assert canceled.status == "canceled"
    with pytest.raises(stripe.InvalidRequestError, match="status of canceled"):
        stripe_client.v1.payment_intents.capture(intent.id)


def test_partial_then_full_refund_and_over_refund_is_rejected(
    stripe_client: stripe.StripeClient,
) -> None:
    intent = _pay(stripe_client)
    first = stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    assert first.status == "succeeded" and first.amount == 500
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1501})
    assert info.value.code == "amount_too_large"
    rest = stripe_client.v1.refunds.create(params={"payment_intent": intent.id})
    assert rest.amount == 1500
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.refunded and charge.amount_refunded == 2000
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1})
    assert again.value.code == "charge_already_refunded"


@pytest.mark.parametrize(
    ("amount", "fee"),
    [(2000, 88), (500, 45), (10000, 320), (1, 30)],
    ids=["20.00", "5.00 rounds 14.5c half-up", "100.00", "1c"],
)
def test_fees_are_2_9_percent_plus_30_cents_rounded_half_up(
    stripe_client: stripe.StripeClient, amount: int, fee: int
) -> None:
    _pay(stripe_client, amount=amount)
    [txn] = stripe_client.v1.balance_transactions.list(params={"type": "charge"}).data
    assert (txn.amount, txn.fee, txn.net) == (amount, fee, amount - fee)


def test_3ds_required_card_needs_action_then_succeeds_after_authentication(
    stripe_client: stripe.StripeClient, psp_sandbox: object, psp_key: str
) -> None:
    import httpx

    intent = _pay(stripe_client, "pm_card_threeDSecure2Required")
    assert intent.status == "requires_action"
    assert intent.next_action is not None
    response = httpx.post(
        f"{psp_sandbox.url}/_sandbox/payment_intents/{intent.id}/authenticate",  # type: ignore[attr-defined]
        data={"result": "succeed"},
        auth=(psp_key, ""),
    )
    assert response.json()["status"] == "succeeded"


def test_search_finds_a_payment_by_metadata(stripe_client: stripe.StripeClient) -> None:
    _pay(stripe_client, metadata={"payment_id": "pay_1"})
    target = _pay(stripe_client, metadata={"payment_id": "pay_2"})
    found = stripe_client.v1.payment_intents.search(
        params={"query": "metadata['payment_id']:'pay_2'"}
    )
    assert [pi.id for pi in found.data] == [target.id]


def test_lists_paginate_newest_first_through_the_sdk(stripe_client: stripe.StripeClient) -> None:
    created = [
        stripe_client.v1.payment_intents.create(params={"amount": 100 + i, "currency": "usd"}).id
        for i in range(5)
    ]
    listed = [
        pi.id
        for pi in stripe_client.v1.payment_intents.list(params={"limit": 2}).auto_paging_iter()
    ]
    assert listed == list(reversed(created))


def test_the_cli_sandbox_serves_the_official_sdk() -> None:
    from payment_systems.integrations.psp_sandbox.server import run_sandbox_process

    with run_sandbox_process() as (url, _pid):
        client = stripe.StripeClient("sk_test_cli_check", base_addresses={"api": url})
        intent = client.v1.payment_intents.create(
            params={
                "amount": 999,
                "currency": "gbp",
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        assert intent.status == "succeeded"

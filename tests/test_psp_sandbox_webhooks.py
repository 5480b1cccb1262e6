"""Sandbox webhooks: signed so stripe.Webhook.construct_event accepts them, retried, faulted."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import stripe

from tests.receivers import WebhookReceiver, webhook_receiver


@pytest.fixture
def receiver(stripe_client: stripe.StripeClient) -> Iterator[WebhookReceiver]:
    with webhook_receiver() as rec:
        endpoint = stripe_client.v1.webhook_endpoints.create(
            params={"url": rec.url, "enabled_events": ["*"]}
        )
        assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
        rec.secret = endpoint.secret
        yield rec


def _fault(sandbox_url: str, key: str, **spec: object) -> None:
    response = httpx.post(f"{sandbox_url}/_sandbox/faults", json=spec, auth=(key, ""))
    response.raise_for_status()


def _pay(client: stripe.StripeClient, pm: str = "pm_card_visa") -> stripe.PaymentIntent:
    return client.v1.payment_intents.create(
        params={"amount": 1000, "currency": "usd", "payment_method": pm, "confirm": True}
    )


def test_every_delivered_event_verifies_with_construct_event(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    intent = _pay(stripe_client)
    with pytest.raises(stripe.CardError):
        _pay(stripe_client, "pm_card_chargeDeclined")
    stripe_client.v1.refunds.create(params={"payment_intent": intent.id})
    wanted = {"payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded"}
    receiver.wait_for(lambda events: wanted <= {e["type"] for e in events})
    assert receiver.failures == []
    assert len(receiver.verified) == len(receiver.events)
    succeeded = next(e for e in receiver.verified if e.type == "payment_intent.succeeded")
    assert succeeded.data.object["id"] == intent.id


def test_a_non_2xx_response_is_retried_until_delivered(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda n: 500 if n <= 2 else 200
    _pay(stripe_client)
    receiver.wait_for(lambda events: "payment_intent.succeeded" in {e["type"] for e in events})
    assert receiver.requests >= 3


def test_only_enabled_events_are_sent(stripe_client: stripe.StripeClient) -> None:
    with webhook_receiver() as rec:
        endpoint = stripe_client.v1.webhook_endpoints.create(
            params={"url": rec.url, "enabled_events": ["payment_intent.succeeded"]}
        )
        rec.secret = endpoint.secret
        _pay(stripe_client)
        rec.wait_for(lambda events: len(events) >= 1)
        assert set(rec.types()) == {"payment_intent.succeeded"}


def test_duplicate_fault_delivers_every_event_twice(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver, psp_sandbox: object, psp_key: str
) -> None:
    _fault(psp_sandbox.url, psp_key, kind="webhook_duplicate", duration_s=30)  # type: ignore[attr-defined]
    _pay(stripe_client)
    receiver.wait_for(
        lambda events: [e["type"] for e in events].count("payment_intent.succeeded") == 2
    )
    ids = [e["id"] for e in receiver.events if e["type"] == "payment_intent.succeeded"]
    assert ids[0] == ids[1]  # the same event id: a receiver must deduplicate on it


def test_reorder_fault_delivers_a_window_of_events_newest_first(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver, psp_sandbox: object, psp_key: str
) -> None:
    _fault(psp_sandbox.url, psp_key, kind="webhook_reorder", window_s=0.5, duration_s=30)  # type: ignore[attr-defined]
    _pay(stripe_client)
    receiver.wait_for(lambda events: len(events) >= 3)
    created = [e["created"] for e in receiver.events]
    types = receiver.types()
    assert types.index("payment_intent.succeeded") < types.index("payment_intent.created")
    assert created == sorted(created, reverse=True)


def test_delay_fault_holds_webhooks_back(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver, psp_sandbox: object, psp_key: str
) -> None:
    _fault(psp_sandbox.url, psp_key, kind="webhook_delay", delay_s=0.6, duration_s=30)  # type: ignore[attr-defined]
    _pay(stripe_client)
    with pytest.raises(AssertionError):
        receiver.wait_for(lambda events: len(events) > 0, timeout=0.3)
    receiver.wait_for(lambda events: len(events) >= 3, timeout=5)


def test_events_can_be_refetched_by_id(
    stripe_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    _pay(stripe_client)
    receiver.wait_for(lambda events: len(events) >= 1)
    first = receiver.events[0]
    again = stripe_client.v1.events.retrieve(first["id"])
    assert again.type == first["type"]

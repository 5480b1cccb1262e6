"""Sandbox webhooks: signed so stripe.Webhook.construct_event accepts them, retried, faulted,
and held, released in any order, duplicated and replayed on request (for model checkers)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import stripe

from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.psp_sandbox.control import (
    held_webhooks,
    hold_webhooks,
    redeliver,
    release_webhooks,
    resume_webhooks,
)
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


# -- holding and releasing, for model checkers -------------------------------------

PAYMENT_EVENTS = ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded"]


def _stays_quiet(receiver: WebhookReceiver, seconds: float = 0.3) -> None:
    """Nothing arrives for a while: far longer than the dispatcher's 20 ms poll."""
    time.sleep(seconds)
    assert receiver.requests == 0, receiver.types()


@pytest.fixture
def holding(psp_sandbox: SandboxServer, psp_key: str, receiver: WebhookReceiver) -> WebhookReceiver:
    """A receiver registered for an account that holds its webhooks."""
    state = hold_webhooks(psp_sandbox.url, psp_key)
    assert state["holding"] is True
    return receiver


def test_held_webhooks_are_not_delivered_until_released(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    intent = _pay(stripe_client)
    _stays_quiet(holding)
    held = held_webhooks(psp_sandbox.url, psp_key)
    assert [h["type"] for h in held] == PAYMENT_EVENTS
    assert held[0]["object_id"] == intent.id
    assert all(h["deliveries"] == 1 and h["attempts"] == 0 for h in held)

    sent = release_webhooks(psp_sandbox.url, psp_key)

    # synchronous: the receiver has everything as soon as the call returns
    assert [s["status"] for s in sent] == [200, 200, 200]
    assert holding.types() == PAYMENT_EVENTS
    assert [e["id"] for e in holding.events] == [h["event"] for h in held]
    assert holding.failures == []
    assert held_webhooks(psp_sandbox.url, psp_key) == []


def test_release_in_reverse_order_delivers_newest_first(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _pay(stripe_client)
    release_webhooks(psp_sandbox.url, psp_key, order="lifo")
    assert holding.types() == PAYMENT_EVENTS[::-1]


def test_release_of_chosen_events_sends_only_those_in_the_given_order(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _pay(stripe_client)
    created, charge, succeeded = (h["event"] for h in held_webhooks(psp_sandbox.url, psp_key))

    release_webhooks(psp_sandbox.url, psp_key, [succeeded, created])

    assert [e["id"] for e in holding.events] == [succeeded, created]
    time.sleep(0.2)
    assert holding.requests == 2  # the one left out stays held
    assert [h["event"] for h in held_webhooks(psp_sandbox.url, psp_key)] == [charge]


def test_release_with_duplicate_delivers_twice(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _pay(stripe_client)
    [_, _, succeeded] = held_webhooks(psp_sandbox.url, psp_key)

    sent = release_webhooks(psp_sandbox.url, psp_key, [succeeded["event"]], duplicate=True)

    assert [s["event"] for s in sent] == [succeeded["event"]] * 2
    assert sent[0]["delivery"] != sent[1]["delivery"]  # two deliveries, one event id
    assert [e["id"] for e in holding.events] == [succeeded["event"]] * 2
    assert len(holding.verified) == 2


def test_random_release_with_the_same_seed_replays_the_same_order(
    psp_sandbox: SandboxServer,
) -> None:
    """Two accounts, the same history and seed: the same permutation, so a run replays."""
    orders = []
    for run in range(2):
        key = f"sk_test_seeded_{run}_{time.time_ns()}"
        client = stripe.StripeClient(
            key, base_addresses={"api": psp_sandbox.url}, max_network_retries=0
        )
        with webhook_receiver() as rec:
            rec.secret = client.v1.webhook_endpoints.create(
                params={"url": rec.url, "enabled_events": ["*"]}
            ).secret
            hold_webhooks(psp_sandbox.url, key)
            for _ in range(3):
                _pay(client)
            release_webhooks(psp_sandbox.url, key, order="random", seed=1234)
            orders.append([(e["type"], e["data"]["object"]["amount"]) for e in rec.events])
            assert rec.failures == []
    assert orders[0] == orders[1]
    assert len(orders[0]) == 9
    assert [t for t, _ in orders[0]] != PAYMENT_EVENTS * 3  # actually shuffled


def test_redeliver_replays_a_delivered_event_with_a_valid_signature(
    stripe_client: stripe.StripeClient,
    receiver: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _pay(stripe_client)
    receiver.wait_for(lambda events: "payment_intent.succeeded" in {e["type"] for e in events})
    original = next(e for e in receiver.events if e["type"] == "payment_intent.succeeded")
    before = len(receiver.events)

    [sent] = redeliver(psp_sandbox.url, psp_key, original["id"])

    assert sent["status"] == 200
    assert sent["state"] == "delivered"
    assert len(receiver.events) == before + 1
    assert receiver.events[-1] == original  # the same event, byte for byte in JSON
    assert receiver.failures == []  # freshly signed: construct_event accepts it
    assert receiver.verified[-1].id == original["id"]


def test_redeliver_of_an_unknown_event_is_a_404(psp_sandbox: SandboxServer, psp_key: str) -> None:
    response = httpx.post(
        f"{psp_sandbox.url}/_sandbox/webhooks/redeliver?event=evt_nope", auth=(psp_key, "")
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "event"


def test_resume_sends_new_events_but_leaves_held_ones_held(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    first = _pay(stripe_client)
    state = resume_webhooks(psp_sandbox.url, psp_key)
    assert state == {"object": "sandbox.webhook_hold", "holding": False, "held": 3}

    second = _pay(stripe_client)
    holding.wait_for(lambda events: len(events) == 3)
    objects = [e["data"]["object"] for e in holding.events]
    intents = {o.get("payment_intent") or o["id"] for o in objects}
    assert intents == {second.id}  # only the new payment's events flowed
    held = held_webhooks(psp_sandbox.url, psp_key)
    assert {h["object_id"] for h in held if h["type"].startswith("payment_intent")} == {first.id}


def test_hold_also_holds_deliveries_queued_before_it(
    stripe_client: stripe.StripeClient,
    receiver: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    """A delayed webhook still waiting when the hold starts must not slip out later."""
    _fault(psp_sandbox.url, psp_key, kind="webhook_delay", delay_s=0.3, duration_s=30)
    _pay(stripe_client)
    state = hold_webhooks(psp_sandbox.url, psp_key)
    assert state["held"] == 3
    _stays_quiet(receiver, 0.6)


def test_a_failed_release_while_holding_goes_back_to_held_not_to_a_retry_timer(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    """Under a hold, only the checker decides when an attempt happens, retries included."""
    holding.respond = lambda n: 500 if n == 1 else 200
    _pay(stripe_client)
    created = held_webhooks(psp_sandbox.url, psp_key)[0]["event"]

    [failed] = release_webhooks(psp_sandbox.url, psp_key, [created])
    assert (failed["status"], failed["state"], failed["attempts"]) == (500, "held", 1)
    time.sleep(0.3)  # the session sandbox would retry after 50 ms
    assert holding.requests == 1
    [still_held, *_] = held_webhooks(psp_sandbox.url, psp_key)
    assert (still_held["event"], still_held["attempts"]) == (created, 1)

    [retried] = release_webhooks(psp_sandbox.url, psp_key, [created])
    assert (retried["status"], retried["state"], retried["attempts"]) == (200, "delivered", 2)


def test_a_failed_release_after_resume_is_retried_with_backoff(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    holding.respond = lambda n: 500 if n == 1 else 200
    _pay(stripe_client)
    created = held_webhooks(psp_sandbox.url, psp_key)[0]["event"]
    resume_webhooks(psp_sandbox.url, psp_key)

    [failed] = release_webhooks(psp_sandbox.url, psp_key, [created])

    assert (failed["status"], failed["state"]) == (500, "pending")
    holding.wait_for(lambda events: [e["id"] for e in events] == [created], timeout=5)


def test_release_with_an_unknown_event_sends_nothing(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _pay(stripe_client)
    created = held_webhooks(psp_sandbox.url, psp_key)[0]["event"]
    response = httpx.post(
        f"{psp_sandbox.url}/_sandbox/webhooks/release",
        data={"event": f"{created},evt_unknown"},
        auth=(psp_key, ""),
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "event"
    assert "evt_unknown" in response.json()["error"]["message"]
    _stays_quiet(holding, 0.1)
    assert len(held_webhooks(psp_sandbox.url, psp_key)) == 3


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"order": "random"}, "seed"),  # an unseeded shuffle could not be replayed
        ({"order": "fifo", "seed": "1"}, "seed"),
        ({"order": "sideways"}, "order"),
        ({"event": "evt_x", "order": "lifo"}, "order"),
        ({"duplicate": "yes"}, "duplicate"),
        ({"events": "evt_x"}, "events"),
    ],
)
def test_a_malformed_release_is_refused_by_parameter_name(
    psp_sandbox: SandboxServer, psp_key: str, data: dict[str, str], param: str
) -> None:
    response = httpx.post(
        f"{psp_sandbox.url}/_sandbox/webhooks/release", data=data, auth=(psp_key, "")
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_hold_belongs_to_one_account(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
) -> None:
    other_key = f"sk_test_other_{time.time_ns()}"
    other = stripe.StripeClient(
        other_key, base_addresses={"api": psp_sandbox.url}, max_network_retries=0
    )
    with webhook_receiver() as rec:
        rec.secret = other.v1.webhook_endpoints.create(
            params={"url": rec.url, "enabled_events": ["*"]}
        ).secret
        _pay(other)
        rec.wait_for(lambda events: len(events) == 3)
    _pay(stripe_client)
    _stays_quiet(holding, 0.1)
    with pytest.raises(httpx.HTTPStatusError):
        held_webhooks(psp_sandbox.url, "not-a-key")


def test_the_duplicate_fault_still_doubles_events_queued_under_a_hold(
    stripe_client: stripe.StripeClient,
    holding: WebhookReceiver,
    psp_sandbox: SandboxServer,
    psp_key: str,
) -> None:
    _fault(psp_sandbox.url, psp_key, kind="webhook_duplicate", duration_s=30)
    _pay(stripe_client)
    held = held_webhooks(psp_sandbox.url, psp_key)
    assert [h["deliveries"] for h in held] == [2, 2, 2]

    release_webhooks(psp_sandbox.url, psp_key, [held[0]["event"]])

    assert [e["id"] for e in holding.events] == [held[0]["event"]] * 2

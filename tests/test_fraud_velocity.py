"""Velocity rules on real Redis: exact window edges, no lost increments, expiry, and the API."""

from __future__ import annotations

import threading

import httpx
import pytest
import redis

from payment_systems.fraud.velocity import Attempt, Decision, Rule, VelocityRules
from tests.conftest import ApiUnderTest


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000_000_000

    def __call__(self) -> int:
        return self.ms


def _attempt(
    card: str = "fp_1", ip: str = "198.51.100.7", amount: int = 1000, customer: str | None = None
) -> Attempt:
    return Attempt("m_1", card, amount, ip, customer)


def test_the_fifth_distinct_card_from_one_ip_in_an_hour_is_blocked(
    redis_client: redis.Redis,
) -> None:
    rules = VelocityRules(redis_client, clock_ms=Clock())
    decisions = [rules.check(_attempt(card=f"fp_{n}")).decision for n in range(5)]
    assert decisions == [
        Decision.ALLOW,
        Decision.ALLOW,
        Decision.REVIEW,
        Decision.REVIEW,
        Decision.BLOCK,
    ]


def test_the_same_card_twice_counts_once_as_a_distinct_card(redis_client: redis.Redis) -> None:
    rules = VelocityRules(redis_client, clock_ms=Clock())
    for _ in range(3):
        verdict = rules.check(_attempt(card="fp_same"))
    assert verdict.values is not None and verdict.values["cards_per_ip"] == 1


def test_an_event_exactly_at_the_window_edge_has_left_the_window(redis_client: redis.Redis) -> None:
    clock = Clock()
    rules = VelocityRules(redis_client, (Rule("card_attempts", 600, 2, 3),), clock_ms=clock)
    rules.check(_attempt())
    clock.ms += 600_000  # exactly 10 minutes later: the first attempt is out of the window
    assert rules.check(_attempt()).values == {"card_attempts": 1}
    clock.ms += 599_999  # one millisecond inside the window of the second
    assert rules.check(_attempt()).values == {"card_attempts": 2}


def test_amounts_are_summed_per_customer_over_24_hours(redis_client: redis.Redis) -> None:
    clock = Clock()
    rules = VelocityRules(redis_client, clock_ms=clock)
    rules.check(_attempt(card="a", amount=600_000, customer="c_1"))
    verdict = rules.check(_attempt(card="b", amount=500_000, customer="c_1"))
    assert (verdict.decision, verdict.rule, verdict.value) == (
        Decision.BLOCK,
        "customer_amount",
        1_100_000,
    )
    clock.ms += 86_400_000
    assert rules.check(_attempt(card="c", amount=100, customer="c_1")).decision is Decision.ALLOW


def test_twenty_parallel_writers_lose_no_increment(redis_client: redis.Redis) -> None:
    rules = VelocityRules(redis_client, (Rule("card_attempts", 600, 10**6, 10**6),))
    barrier = threading.Barrier(20)

    def hammer() -> None:
        barrier.wait()
        for _ in range(50):
            rules.check(_attempt())

    threads = [threading.Thread(target=hammer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rules.check(_attempt()).values == {"card_attempts": 1001}


def test_window_keys_expire_so_idle_keys_cost_no_memory(redis_client: redis.Redis) -> None:
    rules = VelocityRules(redis_client, (Rule("card_attempts", 1, 5, 10),))
    rules.check(_attempt())
    [key] = redis_client.keys("velocity:*")
    assert 0 < redis_client.pttl(key) <= 1000


def test_declines_per_merchant_per_minute(redis_client: redis.Redis) -> None:
    rules = VelocityRules(redis_client, clock_ms=Clock())
    for _ in range(50):
        rules.record_decline("m_1")
    verdict = rules.check(_attempt())
    assert (verdict.decision, verdict.rule) == (Decision.BLOCK, "merchant_declines")


def test_a_blocked_payment_is_a_402_problem_recorded_as_an_event(api: ApiUnderTest) -> None:
    cards = [
        "pm_card_visa",
        "pm_card_mastercard",
        "pm_card_amex",
        "pm_card_visa_debit",
        "pm_card_createDispute",
    ]
    responses = [
        api.post(
            "/v1/payments", {"amount": 500, "currency": "usd", "payment_method": card}, key=f"k{n}"
        )
        for n, card in enumerate(cards)
    ]
    blocked = responses[-1]
    assert [r.status_code for r in responses] == [201, 201, 201, 201, 402]
    assert blocked.headers["content-type"] == "application/problem+json"
    assert blocked.json()["code"] == "fraud_blocked"
    assert blocked.json()["rule"] == "cards_per_ip"
    replay = api.post(
        "/v1/payments", {"amount": 500, "currency": "usd", "payment_method": cards[-1]}, key="k4"
    )
    assert replay.status_code == 402 and replay.headers["Idempotent-Replayed"] == "true"
    with api.runtime.sessions() as session:
        import sqlalchemy as sa

        data = session.execute(
            sa.text("SELECT data FROM payment_events WHERE type = 'PaymentFailed'")
        ).scalar_one()
    assert "fraud_blocked" in str(data)


def test_blocked_attempts_never_reach_the_psp(api: ApiUnderTest) -> None:
    cards = [
        "pm_card_visa",
        "pm_card_mastercard",
        "pm_card_amex",
        "pm_card_visa_debit",
        "pm_card_createDispute",
    ]
    for n, card in enumerate(cards):
        api.post(
            "/v1/payments", {"amount": 500, "currency": "usd", "payment_method": card}, key=f"k{n}"
        )
    intents = httpx.get(
        f"{api.runtime.service.psp.api_base}/v1/payment_intents", auth=(api.psp_key, "")
    ).json()
    assert len(intents["data"]) == 4


@pytest.mark.parametrize("value", [0, 3, 5])
def test_decide_is_a_pure_function_of_the_values(redis_client: redis.Redis, value: int) -> None:
    rules = VelocityRules(redis_client)
    expected = {0: Decision.ALLOW, 3: Decision.REVIEW, 5: Decision.BLOCK}[value]
    assert rules.decide({"cards_per_ip": value}).decision is expected

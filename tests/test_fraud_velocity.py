"""Velocity rules on real Redis: window edges, no lost increments, expiry, scoping, screening."""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.core import payment_state as ps
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import CreatePayment, PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import Payment
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.fraud.velocity import (
    Attempt,
    Decision,
    FraudBlocked,
    Rule,
    VelocityRules,
    card_fingerprint,
)
from payment_systems.infra.redis import fail_fast_retry
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient, PSPOutcomeUnknown, RetryPolicy
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import CircuitBreaker
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
            "/v1/payments",
            {
                "amount": 500,
                "currency": "usd",
                "payment_method": card,
                "customer_ip": "203.0.113.9",
            },
            key=f"k{n}",
        )
        for n, card in enumerate(cards)
    ]
    blocked = responses[-1]
    assert [r.status_code for r in responses] == [201, 201, 201, 201, 402]
    assert blocked.headers["content-type"] == "application/problem+json"
    assert blocked.json()["code"] == "fraud_blocked"
    assert blocked.json()["rule"] == "cards_per_ip"
    replay = api.post(
        "/v1/payments",
        {"amount": 500, "currency": "usd", "payment_method": cards[-1],
         "customer_ip": "203.0.113.9"},
        key="k4",
    )  # fmt: skip
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
        body = {"amount": 500, "currency": "usd", "payment_method": card,
                "customer_ip": "203.0.113.9"}  # fmt: skip
        api.post("/v1/payments", body, key=f"k{n}")
    intents = httpx.get(
        f"{api.runtime.service.psp.api_base}/v1/payment_intents", auth=(api.psp_key, "")
    ).json()
    assert len(intents["data"]) == 4


@pytest.mark.parametrize("value", [0, 3, 5])
def test_decide_is_a_pure_function_of_the_values(redis_client: redis.Redis, value: int) -> None:
    rules = VelocityRules(redis_client)
    expected = {0: Decision.ALLOW, 3: Decision.REVIEW, 5: Decision.BLOCK}[value]
    assert rules.decide({"cards_per_ip": value}).decision is expected


# -- screening in the payment service (issue 13, finding 7) ---------------------------


class Crash(Exception):
    """The process dying at a crash point."""


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dead_redis() -> redis.Redis:
    """A client for a port nobody listens on: a real refused connection, failing fast."""
    return redis.Redis(port=_unused_port(), socket_connect_timeout=0.5, retry=fail_fast_retry())


@pytest.fixture
def sessions(sqlite_engine: Engine) -> sessionmaker[Session]:
    upgrade(sqlite_engine)
    return session_factory(sqlite_engine)


@pytest.fixture
def merchant_id(sessions: sessionmaker[Session]) -> str:
    with unit_of_work(sessions) as session:
        merchant, _key = create_merchant(session, "Screened Shop")
        return merchant.id


def _service(
    sessions: sessionmaker[Session], url: str, key: str, rules: VelocityRules, **kw: Any
) -> PaymentService:
    psp = PSPClient(
        key, url, retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02),
        breaker=CircuitBreaker(f"t-{uuid.uuid4()}"), read_timeout_s=2,
    )  # fmt: skip
    return PaymentService(sessions, psp, fraud=rules, **kw)


def _command(pm: str = "pm_card_visa", **kw: Any) -> CreatePayment:
    return CreatePayment(Money.of("20.00", "USD"), pm, client_ip="203.0.113.9", **kw)


def _screenings(service: PaymentService, payment_id: str) -> list[dict[str, Any]]:
    return [data for kind, data in service.events(payment_id) if kind == ps.SCREENED]


def _only_payment(sessions: sessionmaker[Session]) -> Payment:
    with sessions() as session:
        [payment] = session.scalars(sa.select(Payment)).all()
        return payment


def test_a_retry_after_a_crash_before_screening_is_still_screened(
    sessions: sessionmaker[Session], merchant_id: str, redis_client: redis.Redis,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    crashes = ["payment_created"]

    def crash_once(point: str) -> None:
        if point in crashes:
            crashes.remove(point)
            raise Crash(point)

    rules = VelocityRules(redis_client, clock_ms=Clock())
    service = _service(sessions, psp_sandbox.url, psp_key, rules, crash_point=crash_once)
    probe = Attempt(merchant_id, card_fingerprint("pm_card_visa"), 2000, "203.0.113.9")
    with pytest.raises(Crash):
        service.create(merchant_id, "k-crash", _command())
    stranded = _only_payment(sessions)  # the row committed; the request died before screening
    assert stranded.status == "processing" and _screenings(service, stranded.id) == []
    assert rules.peek(probe).values == {"card_attempts": 0, "cards_per_ip": 0,
                                        "merchant_declines": 0}  # fmt: skip

    retried = service.create(merchant_id, "k-crash", _command())

    assert retried.id == stranded.id and retried.status == "succeeded"
    [screened] = _screenings(service, retried.id)
    assert (screened["decision"], screened["three_d_secure"]) == ("allow", False)
    kinds = [kind for kind, _ in service.events(retried.id)]
    assert kinds == [ps.CREATED, ps.SCREENED, ps.CAPTURED]
    # the rules ran, once
    assert rules.peek(probe).values == {"card_attempts": 1, "cards_per_ip": 1,
                                        "merchant_declines": 0}  # fmt: skip
    folded = ps.fold(service.events(retried.id))
    assert (folded.status, folded.version) == (retried.status, retried.version)


def test_screening_fails_closed_with_503_when_redis_is_down(api: ApiUnderTest) -> None:
    live = api.runtime.service.fraud
    api.runtime.service.fraud = VelocityRules(_dead_redis())
    body = {"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"}
    try:
        refused = api.post("/v1/payments", body, key="k-redis-down")
    finally:
        api.runtime.service.fraud = live
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    problem = refused.json()
    assert problem["code"] == "fraud_screening_unavailable"
    assert "same Idempotency-Key" in problem["detail"]
    with api.runtime.sessions() as session:
        [(payment_id, status)] = session.execute(sa.select(Payment.id, Payment.status)).all()
    assert status == "processing"  # nothing charged: the PSP never saw it
    assert not _screenings(api.runtime.service, payment_id)
    intents = httpx.get(
        f"{api.runtime.service.psp.api_base}/v1/payment_intents", auth=(api.psp_key, "")
    ).json()
    assert intents["data"] == []

    retried = api.post("/v1/payments", body, key="k-redis-down")  # Redis is back

    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    assert (retried.json()["id"], retried.json()["status"]) == (payment_id, "succeeded")
    [screened] = _screenings(api.runtime.service, payment_id)
    assert screened["decision"] == "allow"


def test_review_verdict_steps_up_to_3ds(
    sessions: sessionmaker[Session], merchant_id: str, redis_client: redis.Redis,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    rules = VelocityRules(redis_client, (Rule("card_attempts", 600, review_at=1, block_at=9),))
    service = _service(sessions, psp_sandbox.url, psp_key, rules)

    payment = service.create(merchant_id, "k-review", _command())

    assert payment.status == "requires_action"  # the issuer challenges the cardholder
    [screened] = _screenings(service, payment.id)
    assert screened == {"decision": "review", "rule": "card_attempts", "value": 1,
                        "three_d_secure": True, "values": {"card_attempts": 1}}  # fmt: skip
    intent = service.psp.retrieve_expanded(str(payment.psp_intent_id))
    assert intent["payment_method_options"]["card"]["request_three_d_secure"] == "any"


def test_a_redrive_after_a_review_asks_for_3ds_again(
    sessions: sessionmaker[Session], merchant_id: str, redis_client: redis.Redis,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    rules = VelocityRules(redis_client, (Rule("card_attempts", 600, review_at=1, block_at=9),))
    service = _service(sessions, psp_sandbox.url, psp_key, rules)
    sent: list[bool] = []
    authorize = service.psp.authorize

    def lost_on_the_way(**kw: Any) -> Any:  # the first request never reached the PSP
        sent.append(kw["three_d_secure"])
        if len(sent) == 1:
            raise PSPOutcomeUnknown("authorize", kw["payment_id"], "key", "connect timeout")
        return authorize(**kw)

    service.psp.authorize = lost_on_the_way  # type: ignore[method-assign]
    payment = service.create(merchant_id, "k-redrive", _command())
    assert payment.status == "unknown"

    resolved = service.resolve_unknown(merchant_id, payment.id)

    assert sent == [True, True]  # the janitor's re-drive repeats the review's step-up
    assert resolved.status == "requires_action"
    assert rules.peek(Attempt(merchant_id, card_fingerprint("pm_card_visa"), 2000)).values == {
        "card_attempts": 1
    }  # screened once: the re-drive does not screen again


def test_a_blocked_payment_records_its_screening_and_never_reaches_the_psp(
    sessions: sessionmaker[Session], merchant_id: str, redis_client: redis.Redis,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    rules = VelocityRules(redis_client, (Rule("card_attempts", 600, review_at=1, block_at=1),))
    service = _service(sessions, psp_sandbox.url, psp_key, rules)
    with pytest.raises(FraudBlocked):
        service.create(merchant_id, "k-block", _command())
    payment = _only_payment(sessions)
    assert [kind for kind, _ in service.events(payment.id)] == [ps.CREATED, ps.SCREENED, ps.FAILED]
    assert _screenings(service, payment.id)[0]["decision"] == "block"
    assert service.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment.id) is None


def test_one_merchants_customer_id_cannot_block_another_merchants_customer(
    redis_client: redis.Redis,
) -> None:
    rules = VelocityRules(redis_client, clock_ms=Clock())
    big = Attempt("mer_a", "fp_a", 1_000_000, customer_id="cus_1")  # merchant A: $10,000
    assert rules.check(big).decision is Decision.BLOCK
    theirs = rules.check(Attempt("mer_b", "fp_b", 1_000, customer_id="cus_1"))  # B's cus_1
    assert theirs.decision is Decision.ALLOW
    assert theirs.values is not None and theirs.values["customer_amount"] == 1_000


def test_a_card_tested_at_many_merchants_is_counted_across_all_of_them(
    redis_client: redis.Redis,
) -> None:
    """Card and IP windows stay global: card testers spread one list over many merchants."""
    rules = VelocityRules(redis_client, clock_ms=Clock())
    verdicts = [rules.check(Attempt(f"mer_{n}", "fp_stolen", 100)) for n in range(6)]
    assert [v.decision for v in verdicts][-1] is Decision.BLOCK
    assert verdicts[-1].rule == "card_attempts"


def test_a_dead_redis_never_loses_a_decline_that_the_psp_already_gave(
    sessions: sessionmaker[Session], merchant_id: str, redis_client: redis.Redis,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    service = _service(sessions, psp_sandbox.url, psp_key, VelocityRules(redis_client))
    authorize = service.psp.authorize

    def redis_dies_mid_request(**kw: Any) -> Any:  # screened; then Redis goes away
        service.fraud = VelocityRules(_dead_redis())
        return authorize(**kw)

    service.psp.authorize = redis_dies_mid_request  # type: ignore[method-assign]
    payment = service.create(merchant_id, "k-decline", _command("pm_card_chargeDeclined"))
    assert payment.status == "failed"
    assert service.events(payment.id)[-1][1]["code"] == "card_declined"

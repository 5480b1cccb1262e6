"""The PSP client against the real sandbox: retries that never double-charge."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from payment_systems.config import Settings
from payment_systems.core.idempotency import LOCK_TTL_S
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    CaptureRequest,
    PSPClient,
    PSPDeclined,
    PSPOutcomeUnknown,
    PSPUnavailable,
    RetryPolicy,
    psp_idempotency_key,
    worst_case_psp_seconds,
)
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import BreakerConfig, CircuitBreaker, CircuitOpen
from payment_systems.patterns.rate_limit import TokenBucket

FAST = RetryPolicy(max_attempts=5, base_s=0.05, cap_s=0.2, rng=random.Random(1))
USD_20 = Money.of("20.00", "USD")


class SleepRecorder:
    """Really sleeps (faults expire on the wall clock) and records each backoff."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(seconds)


class SkippedTime:
    """A clock that is real time plus every pause the client asked for, skipped, not slept.

    The HTTP attempts take their real time; the backoffs, which the deadline
    is about, cost nothing, so a 25 s budget is exercised in well under a second.
    """

    def __init__(self) -> None:
        self.skipped = 0.0
        self.sleeps: list[float] = []
        self.start = self.clock()

    def clock(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.skipped += seconds

    def elapsed(self) -> float:
        return self.clock() - self.start


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(
    psp_sandbox: SandboxServer, psp_key: str, sleeps: SleepRecorder
) -> Callable[..., PSPClient]:
    def make(**options: object) -> PSPClient:
        options.setdefault("retry", FAST)
        options.setdefault("sleep", sleeps)
        options.setdefault("breaker", CircuitBreaker(f"psp-{uuid.uuid4()}"))
        return PSPClient(psp_key, psp_sandbox.url, **options)  # type: ignore[arg-type]

    return make


def _fault(sandbox: SandboxServer, key: str, **spec: object) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/faults", json=spec, auth=(key, "")).raise_for_status()


def _count_intents(sandbox: SandboxServer, key: str) -> int:
    httpx.request("DELETE", f"{sandbox.url}/_sandbox/faults", auth=(key, ""))
    body = httpx.get(f"{sandbox.url}/v1/payment_intents", params={"limit": 100}, auth=(key, ""))
    return len(body.json()["data"])


def _authorize(client: PSPClient, payment_id: str = "pay_1", pm: str = "pm_card_visa") -> object:
    return client.authorize(
        merchant_id="m_1", payment_id=payment_id, amount=USD_20, payment_method=pm
    )


def test_authorize_charges_and_tags_the_intent_with_our_ids(
    make_client: Callable[..., PSPClient],
) -> None:
    intent = _authorize(make_client())
    assert intent.status == "succeeded"  # type: ignore[attr-defined]
    assert intent.metadata["payment_id"] == "pay_1"  # type: ignore[attr-defined]


def test_authorizing_the_same_payment_twice_charges_once(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    client = make_client()
    first, second = _authorize(client), _authorize(client)
    assert first.id == second.id  # type: ignore[attr-defined]
    assert _count_intents(psp_sandbox, psp_key) == 1


def test_the_psp_key_is_derived_from_merchant_payment_and_operation() -> None:
    key = psp_idempotency_key("m_1", "pay_1", "authorize")
    assert key == psp_idempotency_key("m_1", "pay_1", "authorize")
    assert key != psp_idempotency_key("m_2", "pay_1", "authorize")
    assert key != psp_idempotency_key("m_1", "pay_1", "capture")
    assert len(key) <= 255


def test_a_5xx_window_is_retried_to_success_with_exactly_one_charge(
    make_client: Callable[..., PSPClient],
    psp_sandbox: SandboxServer,
    psp_key: str,
    sleeps: SleepRecorder,
) -> None:
    _fault(psp_sandbox, psp_key, kind="error", status=503, duration_s=0.25)
    client = make_client(retry=RetryPolicy(max_attempts=8, base_s=0.1, cap_s=0.2))
    intent = _authorize(client)
    assert intent.status == "succeeded"  # type: ignore[attr-defined]
    assert client.attempts > 1 and sleeps.calls
    assert _count_intents(psp_sandbox, psp_key) == 1


def test_a_5xx_after_the_charge_is_replayed_and_surfaces_as_unknown_not_failed(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    _fault(psp_sandbox, psp_key, kind="error", phase="after", methods="POST", duration_s=30)
    client = make_client()
    with pytest.raises(PSPOutcomeUnknown) as info:
        _authorize(client)
    assert info.value.code == "psp_outcome_unknown"
    assert _count_intents(psp_sandbox, psp_key) == 1  # retries were replays, not new charges


def test_a_timeout_after_sending_is_unknown_and_resolve_finds_the_charge(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.0, duration_s=30)
    client = make_client(retry=RetryPolicy(max_attempts=1), read_timeout_s=0.2)
    with pytest.raises(PSPOutcomeUnknown):
        _authorize(client, "pay_timeout")
    httpx.request("DELETE", f"{psp_sandbox.url}/_sandbox/faults", auth=(psp_key, ""))
    found = client.resolve_unknown(merchant_id="m_1", payment_id="pay_timeout")
    assert found is not None and found.status == "succeeded"


def test_a_timeout_is_recovered_by_retrying_with_the_same_key(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.0, duration_s=30)
    client = make_client(read_timeout_s=0.2)
    intent = _authorize(client)  # the retry is answered from the PSP's idempotency store
    assert intent.status == "succeeded"  # type: ignore[attr-defined]
    assert _count_intents(psp_sandbox, psp_key) == 1


def test_resolve_unknown_returns_none_when_the_psp_never_saw_the_payment(
    make_client: Callable[..., PSPClient],
) -> None:
    assert make_client().resolve_unknown(merchant_id="m_1", payment_id="pay_never") is None


def test_a_429_waits_exactly_the_retry_after_the_psp_asked_for(
    make_client: Callable[..., PSPClient],
    psp_sandbox: SandboxServer,
    psp_key: str,
    sleeps: SleepRecorder,
) -> None:
    _fault(psp_sandbox, psp_key, kind="rate_limit", retry_after_s=1, duration_s=0.5)
    intent = _authorize(make_client())
    assert intent.status == "succeeded"  # type: ignore[attr-defined]
    assert sleeps.calls[0] == 1.0


def test_a_decline_is_final_and_not_retried(make_client: Callable[..., PSPClient]) -> None:
    client = make_client()
    with pytest.raises(PSPDeclined) as info:
        _authorize(client, pm="pm_card_chargeDeclinedInsufficientFunds")
    assert info.value.decline_code == "insufficient_funds"
    assert client.attempts == 1


def test_declines_do_not_trip_the_breaker(make_client: Callable[..., PSPClient]) -> None:
    breaker = CircuitBreaker("declines", BreakerConfig(failure_threshold=2))
    client = make_client(breaker=breaker)
    for i in range(4):
        with pytest.raises(PSPDeclined):
            _authorize(client, f"pay_{i}", "pm_card_chargeDeclined")
    assert breaker.state == "closed"


def test_an_unreachable_psp_is_unavailable_not_unknown(sleeps: SleepRecorder) -> None:
    client = PSPClient(
        "sk_test_x1234567", "http://127.0.0.1:9", retry=FAST, sleep=sleeps, connect_timeout_s=0.5
    )
    with pytest.raises(PSPUnavailable, match="nothing was charged"):
        _authorize(client)


def test_an_open_breaker_fails_fast_without_calling_the_psp(sleeps: SleepRecorder) -> None:
    breaker = CircuitBreaker("down", BreakerConfig(failure_threshold=3, reset_timeout_s=60))
    client = PSPClient(
        "sk_test_x1234567", "http://127.0.0.1:9", retry=FAST, breaker=breaker, sleep=sleeps
    )
    with pytest.raises(PSPUnavailable):
        _authorize(client)  # 3 refused connections open the breaker mid-retry
    attempts = client.attempts
    with pytest.raises(PSPUnavailable) as info:
        _authorize(client, "pay_2")
    assert client.attempts == attempts  # no new HTTP attempt
    assert isinstance(info.value.__cause__, CircuitOpen)


def test_the_shared_rate_limiter_paces_calls(
    make_client: Callable[..., PSPClient], redis_client: redis.Redis
) -> None:
    bucket = TokenBucket(redis_client, "psp-writes", rate=20, capacity=1)
    client = make_client(limiter=bucket)
    start = time.monotonic()
    for i in range(5):
        _authorize(client, f"pay_{i}")
    assert time.monotonic() - start >= 4 / 20 * 0.9  # 4 waits of 50 ms after the first token


def test_capture_many_captures_a_batch(make_client: Callable[..., PSPClient]) -> None:
    client = make_client()
    intents = [
        client.authorize(
            merchant_id="m_1",
            payment_id=f"pay_{i}",
            amount=USD_20,
            payment_method="pm_card_visa",
            capture=False,
        )
        for i in range(6)
    ]
    results = client.capture_many(
        [CaptureRequest("m_1", f"pay_{i}", pi.id) for i, pi in enumerate(intents)], max_workers=3
    )
    assert [r.status for r in results] == ["succeeded"] * 6  # type: ignore[union-attr]


def test_retry_policy_retries_only_what_can_succeed_later() -> None:
    policy = RetryPolicy()
    assert [policy.should_retry(s) for s in (None, 409, 429, 500, 503)] == [True] * 5
    assert [policy.should_retry(s) for s in (400, 401, 402, 404)] == [False] * 4


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=5.0, rng=random.Random(3))
    waits = [policy.backoff(n) for n in range(1, 10)]
    assert all(0.25 <= w < 5.0 for w in waits)
    assert max(waits) >= 2.5  # reaches the cap region
    assert policy.backoff(1, retry_after_s=120) == 30.0  # a server hint, bounded


def test_from_env_points_at_the_sandbox_by_default() -> None:
    assert PSPClient.from_env({}).api_base == "http://127.0.0.1:12111"
    assert (
        PSPClient.from_env({"PSP_API_BASE": "https://api.stripe.com"}).api_base
        == "https://api.stripe.com"
    )


def test_a_publishable_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="secret key"):
        PSPClient("pk_test_123")


def test_psp_retries_stop_before_the_idempotency_lock_expires(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    # The PSP charges, then answers 503, again and again: every retry is a replay, and
    # without a deadline 20 attempts with pauses of up to 8 s would run for minutes.
    _fault(psp_sandbox, psp_key, kind="error", phase="after", methods="POST", duration_s=60)
    fake = SkippedTime()
    policy = RetryPolicy(max_attempts=20, base_s=2.0, cap_s=8.0, rng=random.Random(7))
    client = make_client(retry=policy, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(PSPOutcomeUnknown, match="deadline"):  # charged, maybe: not "failed"
        _authorize(client, "pay_deadline")
    assert 1 < client.attempts < policy.max_attempts  # the deadline stopped it, not the count
    assert fake.elapsed() <= policy.deadline_s < LOCK_TTL_S
    assert _count_intents(psp_sandbox, psp_key) == 1


def test_a_retry_after_longer_than_the_time_left_is_not_slept(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    _fault(psp_sandbox, psp_key, kind="rate_limit", retry_after_s=60, duration_s=60)
    fake = SkippedTime()
    client = make_client(
        retry=RetryPolicy(max_retry_after_s=120), sleep=fake.sleep, clock=fake.clock
    )
    with pytest.raises(PSPUnavailable, match="deadline"):  # a 429 charged nothing
        _authorize(client)
    assert fake.sleeps == []  # 60 s would have outlived the lock: give up now, not later
    assert client.attempts == 1


def test_an_attempt_gets_only_the_read_time_the_deadline_leaves(
    make_client: Callable[..., PSPClient], psp_sandbox: SandboxServer, psp_key: str
) -> None:
    # Real time: the PSP holds the answer 5 s; the read timeout is 10 s, the deadline 1.5 s.
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=5.0, duration_s=30)
    policy = RetryPolicy(deadline_s=1.5, min_read_s=0.2)
    client = make_client(retry=policy, connect_timeout_s=0.2, read_timeout_s=10.0)
    start = time.monotonic()
    with pytest.raises(PSPOutcomeUnknown):
        _authorize(client, "pay_cut")
    assert time.monotonic() - start < policy.deadline_s + 0.5  # not the 10 s read timeout
    assert client.attempts == 1


def test_worst_case_psp_time_is_below_lock_ttl() -> None:
    settings = Settings()
    read_s = settings.psp_read_timeout_s
    assert read_s == READ_TIMEOUT_S  # PSP_READ_TIMEOUT_S's default is the client's
    policy = RetryPolicy()
    # Without the deadline the retries outlive the lock (the finding), by a lot with Retry-After
    assert worst_case_psp_seconds(policy, CONNECT_TIMEOUT_S, read_s, deadline=False) == 51.5
    assert worst_case_psp_seconds(policy, retry_after_s=30, deadline=False) == 138.0
    for retry_after in (None, 30.0):
        bounded = worst_case_psp_seconds(
            policy, CONNECT_TIMEOUT_S, read_s, retry_after_s=retry_after
        )
        assert bounded <= policy.deadline_s < settings.lock_ttl_s == LOCK_TTL_S

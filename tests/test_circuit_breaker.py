"""The circuit breaker's state machine, in memory and shared through real Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from payment_systems.patterns.circuit_breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStore,
    CachedBreakerStore,
    CircuitBreaker,
    CircuitOpen,
    MemoryBreakerStore,
    RedisBreakerStore,
)

CONFIG = BreakerConfig(failure_threshold=3, window_s=10, reset_timeout_s=5, half_open_max_calls=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis", "cached-redis"])
def make_breaker(
    request: pytest.FixtureRequest, redis_client: redis.Redis
) -> Callable[[FakeClock], CircuitBreaker]:
    store: BreakerStore = {
        "memory": MemoryBreakerStore,
        "redis": lambda: RedisBreakerStore(redis_client),
        "cached-redis": lambda: CachedBreakerStore(RedisBreakerStore(redis_client)),
    }[request.param]()
    return lambda clock: CircuitBreaker("psp", CONFIG, store=store, clock=clock)


def test_starts_closed_and_lets_calls_through(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    breaker = make_breaker(FakeClock())
    breaker.before_call()
    assert breaker.state is BreakerState.CLOSED


def test_opens_after_threshold_failures_within_the_window(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_failures_spread_beyond_the_window_do_not_open_it(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(5):
        breaker.record_failure()
        clock.now += 6  # at most two failures ever share a 10 s window
    assert breaker.state is BreakerState.CLOSED


def test_an_open_breaker_fails_fast_without_calling(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    calls = []
    with pytest.raises(CircuitOpen) as info, breaker.guard():
        calls.append(1)
    assert calls == []
    assert info.value.code == "circuit_open"
    assert info.value.retry_after_s == pytest.approx(5)


def test_after_the_reset_timeout_one_probe_is_allowed(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller while the probe is out


def test_a_successful_probe_closes_the_breaker(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


def test_a_failed_probe_reopens_it_for_another_timeout(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    with pytest.raises(TimeoutError), breaker.guard():
        raise TimeoutError
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_exceptions_that_are_not_failures_do_not_count(
    make_breaker: Callable[[FakeClock], CircuitBreaker],
) -> None:
    breaker = make_breaker(FakeClock())
    for _ in range(5):
        with (
            pytest.raises(ValueError, match="declined"),
            breaker.guard(is_failure=lambda e: not isinstance(e, ValueError)),
        ):
            raise ValueError("card declined")
    assert breaker.state is BreakerState.CLOSED


def test_two_processes_share_one_redis_breaker(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    worker_a = CircuitBreaker("shared", CONFIG, store=RedisBreakerStore(redis_client), clock=clock)
    worker_b = CircuitBreaker("shared", CONFIG, store=RedisBreakerStore(redis_client), clock=clock)
    worker_a.record_failure()
    worker_b.record_failure()
    worker_a.record_failure()
    with pytest.raises(CircuitOpen):
        worker_b.before_call()  # b never failed 3 times itself, but the fleet did


def test_concurrent_probes_in_half_open_admit_exactly_one(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("race", CONFIG, store=RedisBreakerStore(redis_client), clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    admitted: list[bool] = []
    barrier = threading.Barrier(20)

    def probe() -> None:
        barrier.wait()
        try:
            breaker.before_call()
            admitted.append(True)
        except CircuitOpen:
            admitted.append(False)

    threads = [threading.Thread(target=probe) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 1


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_a_closed_cached_breaker_costs_no_redis_round_trips_on_the_happy_path(
    redis_client: redis.Redis,
) -> None:
    clock = FakeClock()
    store = CachedBreakerStore(RedisBreakerStore(redis_client), ttl_s=0.25)
    breaker = CircuitBreaker("happy", CONFIG, store=store, clock=clock)
    breaker.before_call()  # one read of the shared state
    before = _script_calls(redis_client)
    for _ in range(100):
        clock.now += 0.001
        breaker.before_call()
        breaker.record_success()
    assert _script_calls(redis_client) == before


def test_a_cached_worker_sees_the_fleet_open_the_breaker_within_its_ttl(
    redis_client: redis.Redis,
) -> None:
    clock = FakeClock()
    cached = CircuitBreaker(
        "fleet",
        CONFIG,
        clock=clock,
        store=CachedBreakerStore(RedisBreakerStore(redis_client), ttl_s=0.25),
    )
    other = CircuitBreaker("fleet", CONFIG, store=RedisBreakerStore(redis_client), clock=clock)
    cached.before_call()
    for _ in range(3):
        other.record_failure()  # another worker's failures open it
    cached.before_call()  # still inside the ttl: allowed (the documented price)
    clock.now += 0.25
    with pytest.raises(CircuitOpen):
        cached.before_call()

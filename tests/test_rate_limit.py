"""The shared token bucket never lets a fleet of workers exceed its budget."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from payment_systems.patterns.rate_limit import RateLimited, TokenBucket


def test_a_full_bucket_allows_a_burst_of_its_capacity_then_says_how_long_to_wait(
    redis_client: redis.Redis,
) -> None:
    now = [1_000_000]
    bucket = TokenBucket(redis_client, "psp", rate=10, capacity=5, clock_ms=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.try_acquire() == pytest.approx(0.1)


def test_tokens_refill_at_the_rate(redis_client: redis.Redis) -> None:
    now = [1_000_000]
    bucket = TokenBucket(redis_client, "psp", rate=10, capacity=5, clock_ms=lambda: now[0])
    for _ in range(5):
        bucket.try_acquire()
    now[0] += 300  # 0.3 s -> 3 tokens
    assert [bucket.try_acquire() == 0.0 for _ in range(4)] == [True, True, True, False]


def test_acquire_waits_for_a_token_with_the_injected_sleep(redis_client: redis.Redis) -> None:
    now = [1_000_000]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += int(seconds * 1000)

    bucket = TokenBucket(
        redis_client, "psp", rate=2, capacity=1, clock_ms=lambda: now[0], sleep=sleep
    )
    bucket.acquire()
    assert bucket.acquire() == pytest.approx(0.5)
    assert slept == [pytest.approx(0.5)]


def test_acquire_gives_up_with_a_typed_error_past_its_timeout(redis_client: redis.Redis) -> None:
    bucket = TokenBucket(redis_client, "slow", rate=0.1, capacity=1, clock_ms=lambda: 0)
    bucket.acquire()
    with pytest.raises(RateLimited, match="retry after"):
        bucket.acquire(timeout_s=1)


def test_a_bad_configuration_fails_in_the_constructor(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(redis_client, "x", rate=0, capacity=1)


def test_eight_workers_together_never_exceed_the_budget(redis_client: redis.Redis) -> None:
    rate, capacity, duration = 200.0, 20.0, 1.0
    bucket = TokenBucket(redis_client, "fleet", rate=rate, capacity=capacity)  # Redis TIME
    granted = [0] * 8
    stop = threading.Event()

    def worker(i: int) -> None:
        while not stop.is_set():
            if bucket.try_acquire() == 0.0:
                granted[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    budget = capacity + rate * elapsed
    assert sum(granted) <= budget + 1  # +1: the token being taken as the clock is read
    assert sum(granted) >= 0.5 * rate * duration  # and the bucket did hand tokens out
    assert sum(1 for g in granted if g) > 1  # shared among workers, not one winner

"""Rate limit impact on throughput: what a shared client-side budget does to a fleet.

Answers the study plan's "Rate limit impact on throughput?". Eight worker
threads (standing in for a fleet) send authorizations as fast as they can,
all drawing from one Redis token bucket. Throughput is capped at the budget,
and the price is the time each call waits for a token: latency the PSP
would otherwise have turned into 429s and retries.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from payment_systems.infra import EmbeddedRedis
from payment_systems.integrations.psp_sandbox.server import run_sandbox_process
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money
from payment_systems.patterns.rate_limit import TokenBucket

TITLE = "PSP client: throughput under a shared rate limit (8 workers, 3 s each)"
WORKERS, SECONDS = 8, 3.0
LIMITS: list[float | None] = [25.0, 50.0, 100.0, None]
NOTES = (
    "Each row: 8 threads call authorize in a closed loop for 3 s through one Redis token "
    "bucket (capacity = 1 s of budget / 10). 'unlimited' has no bucket: the sandbox's own "
    "capacity on this machine is the ceiling. Wait is the time a call spent for a token."
)
PLOT = {
    "x": "limit (req/s)",
    "y": ["achieved (req/s)"],
    "kind": "bar",
    "title": "Achieved vs limit",
}


def _scenario(url: str, redis_url: str, limit: float | None) -> dict[str, Any]:
    import redis

    key = "sk_test_" + uuid.uuid4().hex
    bucket = None
    if limit is not None:
        client_redis = redis.Redis.from_url(redis_url)
        bucket = TokenBucket(
            client_redis, f"bench-{uuid.uuid4()}", rate=limit, capacity=max(1, limit / 10)
        )
    waits: list[float] = []
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def worker(w: int) -> None:
        client = PSPClient(key, url)
        amount = Money.of("10.00", "USD")
        i = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            wait = bucket.acquire(timeout_s=10) if bucket else 0.0
            client.authorize(
                merchant_id="m", payment_id=f"{w}-{i}", amount=amount, payment_method="pm_card_visa"
            )
            t2 = time.perf_counter()
            with lock:
                done[0] += 1
                waits.append(wait)
                latencies.append((t2 - t0) * 1000)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    q = statistics.quantiles(latencies, n=100)
    return {
        "limit (req/s)": "unlimited" if limit is None else int(limit),
        "achieved (req/s)": round(done[0] / elapsed, 1),
        "calls": done[0],
        "mean wait for token (ms)": round(statistics.fmean(waits) * 1000, 1),
        "p50 latency (ms)": round(q[49], 1),
        "p99 latency (ms)": round(q[98], 1),
    }


def run() -> list[dict[str, Any]]:
    with EmbeddedRedis() as server, run_sandbox_process() as (url, _pid):
        return [_scenario(url, server.url, limit) for limit in LIMITS]

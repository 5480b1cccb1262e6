"""The study plan's idempotency experiments, as code you can run.

Each variant guards the same "charge" with a different idempotency layer and
faces the same workload:

* 30 idempotency keys, each sent by **3 clients at once**;
* a client that gets 409 retries every 0.5 s (up to 20 times), as real
  clients do;
* the PSP answers in about 50 ms, except **1 call in 10 takes 6 s** (a slow
  PSP tail).

The PSP call deliberately uses a *random* PSP idempotency key, so the lock
under test is the only protection: every extra charge the sandbox records
is a duplicate the layer let through. (The real service also derives the
PSP key from the payment, which would hide these duplicates at the PSP.)

| variant | layer |
|---|---|
| ``baseline`` | Redis ``SET NX PX 30000`` + stored result (the real design) |
| ``timeout-5s`` | the same with a 5 s lock: shorter than the slow PSP tail |
| ``no-nx`` | ``SET PX`` without ``NX``: every request "gets" the lock |
| ``pg-advisory`` | Postgres ``pg_advisory_xact_lock`` + the ``idempotency_keys`` row |
| ``no-result-cache`` | the lock, but the response is not stored: retries re-run |
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import stripe

from payment_systems.core.idempotency import (
    IdempotencyBackend,
    Outcome,
    RedisIdempotency,
    StoredResponse,
    fingerprint,
)

VARIANTS = ("baseline", "timeout-5s", "no-nx", "pg-advisory", "no-result-cache")
KEYS, CLIENTS, RETRY_EVERY_S, MAX_TRIES = 30, 3, 0.5, 20
FAST_MS, SLOW_MS, SLOW_FRACTION = 50, 6000, 0.1


@dataclass(frozen=True)
class ExperimentResult:
    """One variant's numbers."""

    variant: str
    requests: int
    charges: int
    duplicates: int
    conflicts_409: int
    errors: int
    lock_p50_ms: float
    lock_p99_ms: float
    request_p50_ms: float
    request_p99_ms: float

    def row(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "requests": self.requests,
            "charges": self.charges,
            "duplicate charges": self.duplicates,
            "409s": self.conflicts_409,
            "errors": self.errors,
            "lock p50 (ms)": self.lock_p50_ms,
            "lock p99 (ms)": self.lock_p99_ms,
            "request p50 (ms)": self.request_p50_ms,
            "request p99 (ms)": self.request_p99_ms,
        }


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0], 2) if values else 0.0
    return round(statistics.quantiles(values, n=100)[q - 1], 2)


@contextmanager
def _backend(variant: str) -> Iterator[IdempotencyBackend]:
    with ExitStack() as stack:
        if variant == "pg-advisory":
            from payment_systems.core.idempotency_sql import SqlIdempotency
            from payment_systems.database.models import Base
            from payment_systems.infra import EmbeddedPostgres, create_engine

            pg = stack.enter_context(EmbeddedPostgres())
            engine = create_engine(pg.create_database("experiment"), pool_size=40, max_overflow=0)
            Base.metadata.create_all(engine)
            stack.callback(engine.dispose)
            yield SqlIdempotency(engine, lock_timeout_s=30)
            return
        from payment_systems.infra import EmbeddedRedis

        client = stack.enter_context(EmbeddedRedis()).client()
        yield RedisIdempotency(
            client,
            lock_ttl_s=5 if variant == "timeout-5s" else 30,
            nx=variant != "no-nx",
            cache_results=variant != "no-result-cache",
        )


def run_variant(
    variant: str, sandbox_url: str, on_request: Callable[[], None] = lambda: None
) -> ExperimentResult:
    """Run the workload against one variant; ``sandbox_url`` is a running PSP sandbox."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    psp_key = "sk_test_" + uuid.uuid4().hex
    for ms, fraction in ((FAST_MS, 1.0), (SLOW_MS, SLOW_FRACTION)):
        httpx.post(
            f"{sandbox_url}/_sandbox/faults",
            auth=(psp_key, ""),
            json={
                "kind": "latency",
                "ms": ms,
                "fraction": fraction,
                "methods": "POST",
                "duration_s": 600,
            },
        ).raise_for_status()
    psp = stripe.StripeClient(psp_key, base_addresses={"api": sandbox_url}, max_network_retries=0)
    lock_ms: list[float] = []
    request_ms: list[float] = []
    counts = {"requests": 0, "409": 0, "errors": 0}
    lock = threading.Lock()
    body = b'{"amount": 1000, "currency": "usd"}'
    fp = fingerprint("POST", "/v1/payments", body)

    with _backend(variant) as backend:

        def client(key: str) -> None:
            for _ in range(MAX_TRIES):
                started = time.perf_counter()
                try:
                    begun = backend.begin("experiment", key, fp)
                    locked = time.perf_counter()
                    if begun.outcome is Outcome.NEW:
                        intent = psp.v1.payment_intents.create(
                            params={
                                "amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
                                "confirm": True, "metadata": {"key": key},
                            },
                            options={"idempotency_key": uuid.uuid4().hex},  # no PSP safety net
                        )  # fmt: skip
                        backend.complete(
                            "experiment", key, begun.token, StoredResponse(201, intent.id.encode())
                        )
                    outcome = begun.outcome
                except Exception:
                    outcome, locked = None, time.perf_counter()
                done = time.perf_counter()
                with lock:
                    counts["requests"] += 1
                    lock_ms.append((locked - started) * 1000)
                    request_ms.append((done - started) * 1000)
                    if outcome is None:
                        counts["errors"] += 1
                    elif outcome is Outcome.IN_PROGRESS:
                        counts["409"] += 1
                on_request()
                if outcome is not Outcome.IN_PROGRESS:
                    return
                time.sleep(RETRY_EVERY_S)

        with ThreadPoolExecutor(max_workers=KEYS * CLIENTS) as pool:
            list(pool.map(client, [f"key-{k}" for k in range(KEYS) for _ in range(CLIENTS)]))

    per_key: dict[str, int] = {}
    for intent in psp.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter():
        per_key[intent.metadata["key"]] = per_key.get(intent.metadata["key"], 0) + 1
    return ExperimentResult(
        variant=variant,
        requests=counts["requests"],
        charges=sum(per_key.values()),
        duplicates=sum(n - 1 for n in per_key.values()),
        conflicts_409=counts["409"],
        errors=counts["errors"],
        lock_p50_ms=_pct(lock_ms, 50),
        lock_p99_ms=_pct(lock_ms, 99),
        request_p50_ms=_pct(request_ms, 50),
        request_p99_ms=_pct(request_ms, 99),
    )

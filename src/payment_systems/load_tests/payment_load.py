"""An open-loop load generator for ``POST /v1/payments``, measured without lying.

Two mistakes make most load-test numbers wrong, and this module avoids both:

* **Coordinated omission.** A closed-loop tester (N workers, each sending
  its next request when the last returns) slows down exactly when the
  server does, so it never measures the queue it stopped creating. Here the
  arrivals are a fixed timetable (`LoadPlan.arrivals`): request *i* is due
  at ``i / rate`` seconds whatever happened before, and its latency is
  measured from that *intended* time, so time spent waiting for a free
  connection, or for a late event loop, counts.
* **Averages.** Latencies go into an HDR histogram (``hdrhistogram``, 3
  significant digits from 1 µs to 60 s) and are reported as p50 / p95 / p99
  / p99.9 / max: the tail is where customers time out and retry.

Duplicates are the point of an idempotency layer, so the plan re-sends a
fraction of earlier keys, half immediately (the original is usually still
in flight: a concurrent duplicate) and half later (a replay). They are
counted where they would cost money: at the PSP, by grouping its charges by
the load key carried in the payment's metadata
(``/_sandbox/charges/duplicates``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hdrh.histogram import HdrHistogram

from payment_systems.infra.machine import machine_info

MAX_LATENCY_US = 60_000_000  # the histogram's ceiling: 60 s
RECENT_KEYS = 100  # replays pick from this many recent keys


@dataclass(frozen=True, slots=True)
class Arrival:
    """One scheduled request: when it is due, its idempotency key, whether it repeats one."""

    at_s: float
    key: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """A constant arrival rate for a duration, with a share of duplicate keys."""

    rate: float
    duration_s: float
    duplicates: float = 0.0
    seed: int = 1
    amount: int = 1_000
    currency: str = "usd"
    payment_method: str = "pm_card_visa"

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0:
            raise ValueError("rate and duration must be positive")
        if not 0 <= self.duplicates < 1:
            raise ValueError(f"duplicates is a fraction in [0, 1), got {self.duplicates}")

    def arrivals(self, run_id: str) -> list[Arrival]:
        """The timetable: evenly spaced, with seeded duplicate keys.

        Examples:
            >>> plan = LoadPlan(rate=4, duration_s=1, duplicates=0.5, seed=3)
            >>> [(a.at_s, a.duplicate) for a in plan.arrivals("r")]
            [(0.0, False), (0.25, True), (0.5, False), (0.75, True)]
        """
        rng = random.Random(self.seed)
        count = int(self.rate * self.duration_s)
        keys: list[str] = []
        out = []
        for i in range(count):
            at = i / self.rate
            if keys and rng.random() < self.duplicates:
                concurrent = rng.random() < 0.5
                key = keys[-1] if concurrent else rng.choice(keys[-RECENT_KEYS:])
                out.append(Arrival(at, key, True))
            else:
                keys.append(f"{run_id}-{i}")
                out.append(Arrival(at, keys[-1], False))
        return out


@dataclass
class Samples:
    """What the run observed, kept for the report and the plots."""

    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    points: list[tuple[float, float, str]] = field(default_factory=list)  # (at_s, ms, status)
    statuses: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0
    retried: int = 0  # requests re-sent after a dead connection (retry_transport_errors)

    def record(self, at_s: float, latency_s: float, status: str) -> None:
        micros = max(1, min(MAX_LATENCY_US, int(latency_s * 1e6)))
        self.histogram.record_value(micros)
        self.points.append((at_s, latency_s * 1000, status))
        self.statuses[status] += 1

    def percentile_ms(self, p: float) -> float:
        return round(int(self.histogram.get_value_at_percentile(p)) / 1000, 2)


def is_error(status: str, duplicate: bool) -> bool:
    """5xx, transport failures and unexpected 4xx are errors; a 409 on a repeated key is not.

    A 409 answers "this key is still being processed": the correct, safe
    reply to a concurrent duplicate, which the client retries later.
    """
    if status.isdigit():
        code = int(status)
        return not (200 <= code < 300 or (code == 409 and duplicate))
    return True


async def run(
    target: str,
    api_key: str,
    plan: LoadPlan,
    *,
    concurrency: int = 64,
    run_id: str | None = None,
    on_tick: Callable[[int, int, Samples], None] | None = None,
    timeout_s: float = 30.0,
    max_outstanding: int | None = None,
    problem_codes: bool = False,
    retry_transport_errors: bool = False,
) -> tuple[str, Samples, int]:
    """Send ``plan`` to ``target``; returns (run id, samples, error count).

    At most ``max_outstanding`` requests (default: 8 x ``concurrency``) may be
    waiting or in flight. An arrival beyond that is not sent and is recorded
    as ``not_sent``, an error: far above capacity, a generator that queued
    every arrival would spend its CPU on a backlog of doomed requests (on the
    same cores as the server) and finish long after the run. Saying "the
    offered load was not delivered" is the honest alternative.

    With ``problem_codes`` a 5xx is recorded with its problem code
    (``"503 database_busy"``), so a chaos run can say which mechanism answered.
    With ``retry_transport_errors`` a request whose connection died before an
    answer (a server closing a keep-alive connection as the request left) is
    sent once more with the same Idempotency-Key, as Stripe's SDKs do: the
    key makes the retry safe even if the first attempt was processed. The
    count is ``samples.retried``, and the latency includes the retry.
    """
    limit = max_outstanding or 8 * concurrency
    run_id = run_id or "load_" + secrets.token_hex(4)
    arrivals = plan.arrivals(run_id)
    # Either send of a repeated key may be the one that finds the other in flight.
    repeated = {a.key for a in arrivals if a.duplicate}
    samples = Samples()
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=target, limits=limits, timeout=timeout_s) as client:

        async def send(arrival: Arrival, intended: float) -> None:
            nonlocal errors
            body = {
                "amount": plan.amount,
                "currency": plan.currency,
                "payment_method": plan.payment_method,
                "metadata": {"load_run": run_id, "load_key": arrival.key},
            }
            request_headers = {**headers, "Idempotency-Key": arrival.key}
            try:
                try:
                    response = await client.post("/v1/payments", json=body, headers=request_headers)
                except httpx.TransportError as exc:
                    if not retry_transport_errors or isinstance(exc, httpx.TimeoutException):
                        raise
                    samples.retried += 1  # safe: the same key cannot charge twice
                    response = await client.post("/v1/payments", json=body, headers=request_headers)
                status = str(response.status_code)
                if problem_codes and response.status_code >= 500:
                    status = f"{status} {_problem_code(response)}"
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.HTTPError as exc:
                status = (
                    f"connection_error {type(exc).__name__}"
                    if problem_codes
                    else "connection_error"
                )
            samples.record(arrival.at_s, time.perf_counter() - intended, status)
            errors += is_error(status, arrival.key in repeated)

        start = time.perf_counter()
        samples.started = time.time()
        tasks: set[asyncio.Task[None]] = set()
        last_tick = start
        for sent, arrival in enumerate(arrivals, start=1):
            intended = start + arrival.at_s
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= limit:
                samples.statuses["not_sent"] += 1
                errors += 1
                continue
            task = asyncio.create_task(send(arrival, intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_tick is not None and time.perf_counter() - last_tick > 0.25:
                on_tick(sent, len(arrivals), samples)
                last_tick = time.perf_counter()
        while tasks:
            await asyncio.sleep(0.05)
            if on_tick is not None:
                on_tick(len(arrivals), len(arrivals), samples)
        samples.finished = time.time()
    return run_id, samples, errors


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code") or "unknown")
    except ValueError:
        return "not_problem_json"


def count_duplicate_charges(psp_url: str, psp_key: str, run_id: str) -> dict[str, Any]:
    """Ask the PSP sandbox how many charges each load key produced in this run."""
    response = httpx.get(
        f"{psp_url}/_sandbox/charges/duplicates",
        params={"metadata_key": "load_key", "run_key": "load_run", "run": run_id},
        auth=(psp_key, ""),
        timeout=120,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def report(
    plan: LoadPlan, samples: Samples, errors: int, psp_count: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON report: rates, latency percentiles, errors by status, duplicate charges."""
    requests = sum(samples.statuses.values())
    ok = sum(n for status, n in samples.statuses.items() if status.startswith("2"))
    wall = max(samples.finished - samples.started, 1e-9)
    return {
        "offered_rate": plan.rate,
        "achieved_rate": round(ok / wall, 1),
        "duration_s": round(wall, 2),
        "requests": requests,
        "latency_ms": {
            "p50": samples.percentile_ms(50),
            "p95": samples.percentile_ms(95),
            "p99": samples.percentile_ms(99),
            "p999": samples.percentile_ms(99.9),
            "max": round(samples.histogram.get_max_value() / 1000, 2),
            "mean": round(samples.histogram.get_mean_value() / 1000, 2),
        },
        "errors": {s: n for s, n in sorted(samples.statuses.items()) if not s.startswith("2")},
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        "duplicates_sent": round(plan.duplicates, 4),
        "duplicate_charges": None if psp_count is None else psp_count["duplicate_charges"],
        "psp_charges": None if psp_count is None else psp_count["charges"],
        "machine": machine_info(),
    }

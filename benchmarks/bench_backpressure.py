"""Backpressure: goodput against offered load, with and without admission control.

Goodput is successful payments answered within 1 s, per second: what
customers actually got. Without a bound on work in flight, an overloaded
server queues everything, answers late, and goodput collapses; with
admission control it refuses the excess at once and keeps serving the rest.
"""

from __future__ import annotations

from typing import Any

from payment_systems.load_tests.measure import goodput, sampled
from payment_systems.load_tests.system import running_system

TITLE = "Backpressure: goodput (2xx within 1 s) vs offered load, 20 s per point"
OFFERED = (15, 30, 60, 120)
SLO_MS = 1_000
PLOT = {"x": "offered/s", "y": ["goodput, unbounded", "goodput, admission control"],
        "ylabel": "goodput (payments/s)",
        "title": "Goodput vs offered load (2xx answered within 1 s, per second)"}  # fmt: skip


def _curve(limit: str) -> list[tuple[float, dict[str, Any]]]:
    points = []
    with running_system("postgres", workers=2, ADMISSION_LIMIT=limit) as system:
        for rate in OFFERED:
            result, samples = sampled(system, rate, 20, concurrency=256, timeout_s=10)
            points.append((goodput(samples, SLO_MS), result))
    return points


def run() -> list[dict[str, Any]]:
    unbounded, bounded = _curve("0"), _curve("8")
    rows = []
    for rate, (good_u, res_u), (good_b, res_b) in zip(OFFERED, unbounded, bounded, strict=True):
        rows.append({
            "offered/s": rate,
            "goodput, unbounded": good_u,
            "goodput, admission control": good_b,
            "p99 ms, unbounded": res_u["latency_ms"]["p99"],
            "p99 ms, admission control": res_b["latency_ms"]["p99"],
            "shed (503), admission control": res_b["errors"].get("503", 0),
            "duplicate charges": (res_u["duplicate_charges"] or 0)
            + (res_b["duplicate_charges"] or 0),
        })  # fmt: skip
    return rows


NOTES = (
    "Two fresh systems (PostgreSQL, 2 API workers): ADMISSION_LIMIT=0 (unbounded) and "
    "ADMISSION_LIMIT=8 per worker. Open-loop load, client timeout 10 s. p99 includes the "
    "fast 503 answers of shed requests, which clients retry after Retry-After."
)

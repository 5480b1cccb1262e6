"""The create-payment path under constant load: the study plan's rates, on this machine.

Each row is one fresh system (two API workers, the sandbox, Redis, the
database) driven open-loop for 60 s by `payment_systems.load_tests`. Rates
far above capacity are kept on purpose: the page shows what overload does.
"""

from __future__ import annotations

from typing import Any

from payment_systems.load_tests.measure import load
from payment_systems.load_tests.system import running_system

TITLE = "Create-payment path: constant arrival rate for 60 s (2 API workers)"
RATES = (250, 500, 1_000, 2_000)
DURATION_S = 60


def _row(database: str, rate: float) -> dict[str, Any]:
    with running_system(database, workers=2) as system:
        result = load(system, rate, DURATION_S, duplicates=0.05)
    latency = result["latency_ms"]
    return {
        "database": database,
        "offered/s": rate,
        "achieved/s": result["achieved_rate"],
        "p50 ms": latency["p50"],
        "p95 ms": latency["p95"],
        "p99 ms": latency["p99"],
        "p99.9 ms": latency["p999"],
        "mean ms": latency["mean"],
        "error rate": f"{result['error_rate']:.1%}",
        "503 shed": result["errors"].get("503", 0),
        "timeouts": result["errors"].get("timeout", 0),
        "not sent": result["errors"].get("not_sent", 0),
        "duplicate charges": result["duplicate_charges"],
    }


def run() -> list[dict[str, Any]]:
    rows = [_row("postgres", rate) for rate in RATES]
    rows.append(_row("sqlite", RATES[0]))
    return rows


NOTES = (
    "Offered open-loop with 5% duplicate keys (half concurrent, half replayed); latency from "
    "the intended send time; client timeout 10 s; at most 512 requests outstanding in the "
    "generator (arrivals beyond are 'not sent', errors); FRAUD_RULES=off; admission control at its "
    "default (16 in flight per worker, the rest answered 503 + Retry-After at once). The load "
    "generator runs on the same 2 cores as the system it measures."
)

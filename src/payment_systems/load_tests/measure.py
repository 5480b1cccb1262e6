"""Counting what one request costs: Redis commands, database commits, PSP calls.

Each counter is read from the component itself (Redis ``INFO commandstats``,
PostgreSQL ``pg_stat_database``, the sandbox's request count) before and after
a run, so the figures include everything the system did for those requests,
webhooks and background work included, and nothing the tester assumed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from payment_systems.infra import create_engine
from payment_systems.infra.redis import connect_redis
from payment_systems.load_tests.payment_load import (
    LoadPlan,
    Samples,
    count_duplicate_charges,
    report,
    run,
)
from payment_systems.load_tests.system import RunningSystem


def redis_round_trips(url: str) -> int:
    """Script calls the Redis server has served since it started.

    Every Redis operation on the payment path is one Lua script (``EVALSHA``),
    so script calls are the round trips; the commands inside a script run on
    the server and cost no extra trip.
    """
    stats = connect_redis(url).info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def database_commits(database_url: str) -> int | None:
    """Committed transactions in this PostgreSQL database (None on SQLite: not counted)."""
    if not database_url.startswith("postgresql"):
        return None
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT xact_commit FROM pg_stat_database"
                        " WHERE datname = current_database()"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def psp_requests(psp_url: str) -> int:
    """API requests the PSP sandbox has served."""
    return int(httpx.get(f"{psp_url}/_sandbox/stats", timeout=10).json()["api_requests"])


@dataclass(frozen=True)
class Counters:
    redis: int
    commits: int | None
    psp: int

    @classmethod
    def read(cls, system: RunningSystem) -> Counters:
        return cls(
            redis_round_trips(system.redis_url),
            database_commits(system.database_url),
            psp_requests(system.psp_url),
        )


def sampled(
    system: RunningSystem,
    rate: float,
    duration_s: float,
    *,
    duplicates: float = 0.0,
    concurrency: int = 64,
    timeout_s: float = 10.0,
) -> tuple[dict[str, Any], Samples]:
    """One open-loop run against ``system``, with duplicates counted at its PSP.

    Returns the report and the raw samples (for goodput and plots).
    """
    plan = LoadPlan(rate, duration_s, duplicates)
    run_id, samples, errors = asyncio.run(
        run(system.url, system.api_key, plan, concurrency=concurrency, timeout_s=timeout_s)
    )
    counted = count_duplicate_charges(system.psp_url, system.psp_key, run_id)
    return report(plan, samples, errors, counted), samples


def load(system: RunningSystem, rate: float, duration_s: float, **options: Any) -> dict[str, Any]:
    """`sampled`, when only the report matters."""
    return sampled(system, rate, duration_s, **options)[0]


def per_request(system: RunningSystem, rate: float, duration_s: float) -> dict[str, Any]:
    """Average Redis round trips, DB commits and PSP calls per created payment."""
    before = Counters.read(system)
    result = load(system, rate, duration_s)
    # let webhooks and their re-fetches land: they are part of a payment's cost
    time.sleep(3)
    after = Counters.read(system)
    created = result["psp_charges"] or 1
    commits = (
        None
        if before.commits is None or after.commits is None
        else round((after.commits - before.commits) / created, 2)
    )
    return {
        "payments": created,
        "redis_round_trips": round((after.redis - before.redis) / created, 2),
        "db_commits": commits,
        "psp_requests": round((after.psp - before.psp) / created, 2),
        "p50_ms": result["latency_ms"]["p50"],
    }


def goodput(samples: Samples, slo_ms: float) -> float:
    """Successful answers within ``slo_ms``, per second of offered traffic.

    A payment answered after the client gave up is work the server did for
    nobody; goodput counts only answers that were still useful.
    """
    good = sum(1 for _at, ms, status in samples.points if status.startswith("2") and ms <= slo_ms)
    span = max((at for at, _ms, _status in samples.points), default=0.0) or 1.0
    return round(good / span, 1)

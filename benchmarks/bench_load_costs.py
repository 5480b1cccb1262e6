"""Capacity, the idempotency layer's overhead, what one payment costs, and the bill.

* **Capacity**: the achieved rate of successful payments when offered more
  than the system can take (PostgreSQL, 2 API workers).
* **Idempotency overhead**: the same saturation run with the layer on and
  with ``IDEMPOTENCY_LAYER=off``, in the same benchmark run.
* **Per payment**: Redis round trips, database commits and PSP calls, read
  from Redis, PostgreSQL and the sandbox before and after a gentle run.
* **Cost**: core-hours per million payments at the measured capacity, at a
  stated price per core-hour.
"""

from __future__ import annotations

import os
import statistics
import time
from decimal import Decimal
from typing import Any

import psutil

from payment_systems.load_tests.measure import load, per_request
from payment_systems.load_tests.system import running_system

TITLE = "Capacity, idempotency overhead, cost per payment (PostgreSQL, 2 API workers)"
SATURATION_RATE = 60  # offered/s: above capacity on 2 cores; the excess is shed (503)
SATURATION_S = 20
REPEATS = 3  # runs on this shared machine vary by +-10%: alternate the two, take medians
PRICE_PER_CORE_HOUR = Decimal("0.045")  # USD; an on-demand general-purpose cloud vCPU, roughly
CORES = os.cpu_count() or 1


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for proc in (process, *process.children(recursive=True)):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _cpu_per_payment(**env: str) -> float:
    """API + Redis CPU milliseconds per successful payment, below capacity (steady)."""
    with running_system("postgres", workers=2, **env) as system:
        load(system, 10, 3)  # warm up
        pids = [system.api_pid, system.redis_pid]
        before = _cpu_seconds(pids)
        result = load(system, 20, 20)
        time.sleep(3)  # webhooks land
        spent = _cpu_seconds(pids) - before
    return 1000 * spent / max(1, result["psp_charges"] or 0)


def _saturated(**env: str) -> float:
    with running_system("postgres", workers=2, **env) as system:
        return float(load(system, SATURATION_RATE, SATURATION_S)["achieved_rate"])


def run() -> list[dict[str, Any]]:
    with running_system("postgres", workers=2) as system:
        costs = per_request(system, rate=10, duration_s=10)
    runs_on, runs_off = [], []
    for _ in range(REPEATS):
        runs_on.append(_saturated())
        runs_off.append(_saturated(IDEMPOTENCY_LAYER="off"))
    on, off = statistics.median(runs_on), statistics.median(runs_off)
    cpu_on, cpu_off = _cpu_per_payment(), _cpu_per_payment(IDEMPOTENCY_LAYER="off")
    per_core = Decimal(str(on)) / CORES
    core_hours_per_million = Decimal(1_000_000) / per_core / 3600
    cost_per_million = (core_hours_per_million * PRICE_PER_CORE_HOUR).quantize(Decimal("0.01"))

    def monthly(tps: int) -> str:
        cores = Decimal(tps) / per_core
        return f"{cores:.0f} cores, ${cores * PRICE_PER_CORE_HOUR * 730:,.0f}/month"

    return [
        {"measure": "capacity (successful payments/s)", "value": f"{on:g}",
         "how": f"median of {runs_on}: offered {SATURATION_RATE}/s for {SATURATION_S} s"},
        {"measure": "capacity without the idempotency layer", "value": f"{off:g}",
         "how": f"median of {runs_off}, IDEMPOTENCY_LAYER=off, runs alternated"},
        {"measure": "idempotency throughput ratio (on / off), saturation runs",
         "value": f"{on / off:.2f}", "how": "medians above; goal >= 0.85"},
        {"measure": "API + Redis CPU per payment, layer on / off (ms)",
         "value": f"{cpu_on:.1f} / {cpu_off:.1f}",
         "how": "20/s for 20 s, psutil, webhooks included"},
        {"measure": "idempotency throughput ratio from CPU (off / on)",
         "value": f"{cpu_off / cpu_on:.2f}",
         "how": "CPU-bound throughput is 1 / CPU per payment; steadier than saturation runs"},
        {"measure": "Redis round trips per payment", "value": f"{costs['redis_round_trips']:g}",
         "how": "EVALSHA calls, INFO commandstats, 10/s for 10 s; goal <= 2"},
        {"measure": "database commits per payment", "value": f"{costs['db_commits']:g}",
         "how": "pg_stat_database.xact_commit, webhooks included"},
        {"measure": "PSP calls per payment", "value": f"{costs['psp_requests']:g}",
         "how": "the sandbox's request count, webhook re-fetches included"},
        {"measure": "p50 at 10/s (ms)", "value": f"{costs['p50_ms']:g}",
         "how": "unloaded latency of one payment, end to end"},
        {"measure": "cost per 1M payments", "value": f"${cost_per_million}",
         "how": f"{core_hours_per_million:.1f} core-hours at ${PRICE_PER_CORE_HOUR}/core-hour"},
        {"measure": "the study plan's 1,000 TPS", "value": monthly(1_000),
         "how": "cores = rate / measured rate per core, 730 h a month"},
        {"measure": "10x that: 10,000 TPS", "value": monthly(10_000),
         "how": "linear scaling assumed (stateless workers; see the limits on the page)"},
    ]  # fmt: skip


NOTES = (
    f"Price: ${PRICE_PER_CORE_HOUR} per core-hour, an assumption close to an on-demand cloud "
    "vCPU; change PRICE_PER_CORE_HOUR in benchmarks/bench_load_costs.py for yours. The "
    "capacity counts every core of this machine, including the ones the sandbox, Redis, "
    "PostgreSQL and the load generator use, so it is a whole-system figure."
)

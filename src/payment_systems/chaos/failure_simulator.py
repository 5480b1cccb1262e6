"""Run a chaos scenario against the real system and answer the study plan's five questions.

For each scenario (`payment_systems.chaos.scenarios`), `run_scenario`:

1. starts the whole system as separate processes (`load_tests.system`);
2. sends steady open-loop payment traffic, with 10% repeated idempotency
   keys (`load_tests.payment_load`), for a baseline, the fault window and a
   recovery period, while a `Monitor` polls ``/readyz`` and ``/metrics``;
3. injects the fault after the baseline and removes it after the window;
4. settles (webhooks, then the janitor) and audits the money (`chaos.audit`).

It then answers, from what was measured:

* **How quickly detected?** The first monitor sample after the injection
  where ``/readyz`` said "degraded", an error counter rose, unknown
  outcomes appeared, or a worker's resident memory grew past half the
  recycling limit; and which signal it was.
* **Customer impact?** Requests, error rate, errors by status, p50/p99 and
  max latency of the requests *sent during the window*.
* **Automatic recovery?** Seconds from the end of the fault until
  ``/readyz`` was ready again and five payments in a row succeeded, with no
  human step; and how many workers were recycled.
* **Financial impact?** Duplicate charges, lost payments, ledger-versus-PSP
  breaks. All must be 0.
* **Prevention?** The mechanism meant to hold, and the evidence it did:
  the error codes answered and the degraded checks seen.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payment_systems.chaos.audit import audit
from payment_systems.chaos.monitor import Monitor, Sample
from payment_systems.chaos.scenarios import RECYCLE_GROWTH_MB, SCENARIOS, Context, Scenario
from payment_systems.infra.machine import machine_info
from payment_systems.load_tests.payment_load import LoadPlan, Samples, run
from payment_systems.load_tests.system import running_system

BASELINE_S = 3.0
RECOVERY_S = 8.0  # traffic after the fault is removed, to see the system come back
HEALTHY_STREAK = 5  # consecutive successful payments that count as "recovered"


def _ok(status: str) -> bool:
    # 409 is the correct answer to a concurrent duplicate key, not a failure
    return status.startswith("2") or status.startswith("409")


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)], 1)


def impact(samples: Samples, start: float, end: float) -> dict[str, Any]:
    """What the customers who paid during [start, end) (load-relative seconds) saw."""
    window = [(ms, status) for at, ms, status in samples.points if start <= at < end]
    errors = Counter(status for _ms, status in window if not _ok(status))
    latencies = [ms for ms, _status in window]
    return {
        "requests": len(window),
        "error_rate": round(sum(errors.values()) / len(window), 4) if window else 0.0,
        "errors": dict(sorted(errors.items())),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": round(max(latencies), 1) if latencies else 0.0,
        "not_sent": samples.statuses.get("not_sent", 0),
        "client_retries": samples.retried,  # whole run: connections that died before an answer
    }


def _signal(sample: Sample, base: Sample, rss_limit: int) -> str | None:
    if not sample.ready:
        bad = {k: v for k, v in sample.checks.items() if v != "ok" and k != "status"}
        return "readyz degraded: " + ", ".join(f"{k}={v}" for k, v in bad.items())
    if sample.errors() > base.errors():
        return f"api_errors_total rose: {sample.errors_since(base)}"
    if sample.unknown_outcomes() > base.unknown_outcomes():
        return "payments_total{outcome=unknown} rose"
    if sample.rss_bytes and base.rss_bytes and sample.rss_bytes - base.rss_bytes > rss_limit:
        grown = (sample.rss_bytes - base.rss_bytes) / 2**20
        return f"process_resident_memory_bytes +{grown:.0f} MB"
    if not sample.scraped:  # a failed scrape is Prometheus' `up == 0`: worth a look too
        return f"/metrics unavailable: {sample.metrics}"
    return None


def detection(samples: list[Sample], inject_at: float, heal_at: float) -> dict[str, Any]:
    """When, and by which signal, the monitor first saw the fault; what it saw during it."""
    # Counters come only from looks whose scrape answered with metrics: a failed
    # scrape has none, which is "unknown", not "zero".
    before = [s for s in samples if s.at < inject_at and s.scraped]
    if not before:
        return {"detected_after_s": None, "signal": None, "seen": {}, "error_codes": {}}
    # the baseline: the last look before the fault, with the largest worker RSS seen
    rss = max((s.rss_bytes or 0) for s in before)
    base = Sample(before[-1].at, True, {}, rss, before[-1].counters, before[-1].workers)
    during = [s for s in samples if inject_at <= s.at <= heal_at + 2]
    first = next(
        ((s, why) for s in during if (why := _signal(s, base, RECYCLE_GROWTH_MB * 2**19))), None
    )
    seen: dict[str, list[str]] = {}
    for s in during:
        for k, v in s.checks.items():
            if v not in ("ok", "ready", "degraded") and v not in seen.setdefault(k, []):
                seen[k].append(v)
        if not s.scraped and s.metrics not in seen.setdefault("metrics", []):
            seen["metrics"].append(s.metrics)  # e.g. "503 database_busy"
    last = next((s for s in reversed(samples) if s.scraped), base)
    codes = last.errors_since(base)
    return {
        "detected_after_s": None if first is None else round(first[0].at - inject_at, 2),
        "signal": None if first is None else first[1],
        "seen": {k: v for k, v in seen.items() if v},
        "error_codes": codes,  # problem codes answered after the fault began (api_errors_total)
    }


def recovery(
    samples: Samples, monitor: list[Sample], heal_rel: float, heal_at: float
) -> dict[str, Any]:
    """Seconds from heal until ready and ``HEALTHY_STREAK`` payments in a row succeeded."""
    after = sorted((at, status) for at, _ms, status in samples.points if at >= heal_rel)
    streak_from: float | None = None
    run_start, length = 0.0, 0
    for at, status in after:
        if _ok(status):
            run_start, length = (at, 1) if length == 0 else (run_start, length + 1)
            if length >= HEALTHY_STREAK:
                streak_from = run_start
                break
        else:
            length = 0
    ready_at = next((s.at for s in monitor if s.at >= heal_at and s.ready), None)
    pids = {pid for s in monitor for pid in s.workers}
    initial = len(monitor[0].workers) if monitor else 0
    recovered = streak_from is not None and ready_at is not None
    return {
        "automatic": recovered,
        "after_s": round(max(streak_from - heal_rel, ready_at - heal_at, 0.0), 2)
        if streak_from is not None and ready_at is not None
        else None,
        "workers_recycled": max(0, len(pids) - initial),
    }


def run_scenario(
    scenario: Scenario,
    *,
    scale: float = 0.1,
    rate: float = 10.0,
    on_phase: Callable[[str], None] = lambda _phase: None,
) -> dict[str, Any]:
    """Run one scenario end to end; returns its report (see the module docstring)."""
    window = scenario.window(scale)
    plan = LoadPlan(rate, BASELINE_S + window + RECOVERY_S, duplicates=0.1, seed=7)
    with tempfile.TemporaryDirectory(prefix="chaos-") as raw:
        tmp = Path(raw)
        env = scenario.options(scale, tmp)
        on_phase("starting the system")
        with running_system(scenario.database, 2, psp_proxy=scenario.proxy_psp, env=env) as system:
            ctx = Context(system, tmp, scale)
            monitor = Monitor(system.url, system.api_pid).start()
            time.sleep(0.5)  # a first look before any traffic
            outcome: dict[str, Any] = {}

            def load() -> None:
                outcome["run"] = asyncio.run(
                    run(
                        system.url,
                        system.api_key,
                        plan,
                        concurrency=32,
                        timeout_s=20,
                        problem_codes=True,
                    )
                )

            thread = threading.Thread(target=load, name="chaos-load")
            start = time.time()
            thread.start()
            on_phase("baseline traffic")
            time.sleep(BASELINE_S)
            on_phase(f"fault injected for {window:.0f} s")
            inject_at = time.time()
            scenario.inject(ctx)
            time.sleep(max(0.0, inject_at + window - time.time()))
            heal_at = time.time()
            scenario.heal(ctx)
            on_phase("fault removed: watching recovery")
            thread.join()
            time.sleep(1.0)
            looks = monitor.stop()
            run_id, samples, _errors = outcome["run"]
            offset = samples.started - start  # load-relative time = wall - samples.started
            on_phase("settling and auditing the money")
            money = audit(system, run_id)
    inject_rel, heal_rel = inject_at - start - offset, heal_at - start - offset
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "title": scenario.title,
        "scale": scale,
        "window_s": round(window, 1),
        "rate": rate,
        "detection": detection(looks, inject_at, heal_at),
        "impact": impact(samples, inject_rel, heal_rel),
        "recovery": recovery(samples, looks, heal_rel, heal_at),
        "financial": money.as_json(),
        "prevention": scenario.prevention,
    }
    checks = {
        "detected": result["detection"]["detected_after_s"] is not None,
        "recovered without a human": bool(result["recovery"]["automatic"]),
        "no duplicate charge, lost payment or break": money.clean,
        **scenario.expectations(result),
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return result


def run_all(
    names: list[str], *, scale: float, rate: float, on_phase: Callable[[str, str], None]
) -> dict[str, Any]:
    """Run scenarios by name (``all`` for every one); the report ``chaos.json`` holds."""
    chosen = list(SCENARIOS) if names == ["all"] else names
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from: all, {', '.join(SCENARIOS)}")
    results = []
    for name in chosen:

        def phase(text: str, name: str = name) -> None:
            on_phase(name, text)

        results.append(run_scenario(SCENARIOS[name], scale=scale, rate=rate, on_phase=phase))
    return {
        "machine": machine_info(),
        "scale": scale,
        "rate": rate,
        "passed": all(r["passed"] for r in results),
        "scenarios": results,
    }

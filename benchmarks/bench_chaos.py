"""Chaos: the study plan's five failures (six runs: Redis twice, once per policy) at scale 0.1.

The same code as ``payment-systems chaos all --scale 0.1 --json chaos.json``;
this module flattens its report into one row per scenario for the
"Failure modes" page.
"""

from __future__ import annotations

from typing import Any

from payment_systems.chaos.failure_simulator import run_all

TITLE = "Chaos scenarios: detection, customer impact, recovery, money (scale 0.1, 10 payments/s)"
SCALE = 0.1
PLOT = {"x": "scenario", "y": ["errors in window %"], "kind": "bar",
        "ylabel": "% of payments sent during the fault that got an error",
        "title": "Customer impact during each fault (errors: fast 503s)"}  # fmt: skip


def row(r: dict[str, Any]) -> dict[str, Any]:
    """One scenario's report as a flat table row."""
    impact, money = r["impact"], r["financial"]
    return {
        "scenario": r["scenario"],
        "fault window s": r["window_s"],
        "detected after s": r["detection"]["detected_after_s"],
        "detected by": r["detection"]["signal"],
        "requests in window": impact["requests"],
        "errors in window %": round(100 * impact["error_rate"], 1),
        "errors": ", ".join(f"{k}: {v}" for k, v in impact["errors"].items()) or "none",
        "p99 in window ms": impact["p99_ms"],
        "client retries": impact["client_retries"],
        "recovered after s": r["recovery"]["after_s"],
        "workers recycled": r["recovery"]["workers_recycled"],
        "settled by janitor": money["resolved_by_janitor"],
        "duplicate charges": money["duplicate_charges"],
        "lost payments": money["lost_payments"],
        "ledger-PSP breaks": money["ledger_psp_breaks"],
        "book breaks": money.get("book_breaks", "not recorded"),
        "passed": r["passed"],
    }


def run() -> list[dict[str, Any]]:
    report = run_all(["all"], scale=SCALE, rate=10.0, on_phase=lambda _name, _phase: None)
    return [row(r) for r in report["scenarios"]]


NOTES = (
    "Each scenario starts a fresh system (PostgreSQL, embedded Redis, the PSP sandbox, 2 API "
    "workers), sends 10 payments/s with 10% repeated idempotency keys for 3 s, injects the "
    "fault for the study plan's duration x 0.1 (at least 4-10 s), removes it and watches 8 s "
    "more. The client retries once, with the same idempotency key, when its connection dies "
    "before an answer (as Stripe's SDKs do); 'client retries' counts those over the whole run. "
    "Detection is the first /readyz or /metrics poll (every 0.2 s) that showed it. "
    "Recovery is from the fault's removal until /readyz was ready and 5 payments in a row "
    "succeeded. The money is audited after webhooks settle and the janitor runs: charges at "
    "the PSP grouped by idempotency key, PSP charges vs our payments, and reconciliation of "
    "our ledger against the PSP's balance transactions."
)

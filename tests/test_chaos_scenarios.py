"""Every chaos scenario, at a small scale, against the whole system: the five answers, checked.

Each test starts PostgreSQL, Redis, the sandbox and two API workers, sends
steady traffic, injects its fault, removes it, and audits the money. The
scale compresses the study plan's windows to a few seconds; the mechanisms
are the ones that run at full scale (`payment-systems chaos all --scale 1`).
"""

from __future__ import annotations

from typing import Any

import pytest

from payment_systems.chaos.failure_simulator import run_scenario
from payment_systems.chaos.scenarios import SCENARIOS


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def report(request: pytest.FixtureRequest) -> dict[str, Any]:
    return run_scenario(SCENARIOS[request.param], scale=0.01, rate=10)


def test_the_fault_is_detected_by_the_monitor_while_it_lasts(report: dict[str, Any]) -> None:
    detected = report["detection"]["detected_after_s"]
    assert detected is not None, report["detection"]
    assert detected <= report["window_s"], report["detection"]


def test_customers_see_fast_clear_errors_or_nothing_never_a_hang(report: dict[str, Any]) -> None:
    impact = report["impact"]
    assert impact["requests"] > 0
    # a 503 with a problem code and Retry-After; never a 500, a timeout or a dropped connection
    assert all(status.startswith("503 ") for status in impact["errors"]), impact
    assert impact["max_ms"] < 10_000, impact


def test_the_system_recovers_without_a_human(report: dict[str, Any]) -> None:
    assert report["recovery"]["automatic"], report["recovery"]
    assert report["recovery"]["after_s"] < 10, report["recovery"]


def test_no_customer_is_charged_twice_or_lost_and_the_books_match_the_psp(
    report: dict[str, Any],
) -> None:
    money = report["financial"]
    assert money["psp_charges"] > 0
    assert money["duplicate_charges"] == 0, money
    assert money["lost_payments"] == 0, money
    assert money["ledger_psp_breaks"] == 0, money
    assert money["book_breaks"] == 0, money  # balanced journals, no open holds, balances = net


def test_the_prevention_mechanism_held(report: dict[str, Any]) -> None:
    assert report["prevention"]
    assert report["checks"] and all(report["checks"].values()), report["checks"]
    assert report["passed"]

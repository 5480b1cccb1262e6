"""The load generator: an honest timetable, honest errors, duplicates counted at the PSP."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.cli import app
from payment_systems.load_tests.capacity import Goals, find_max
from payment_systems.load_tests.payment_load import LoadPlan, is_error


def test_arrivals_follow_the_timetable_whatever_the_server_does() -> None:
    arrivals = LoadPlan(rate=200, duration_s=2).arrivals("r")
    assert len(arrivals) == 400
    gaps = {round(b.at_s - a.at_s, 9) for a, b in itertools.pairwise(arrivals)}
    assert gaps == {0.005}


def test_duplicates_reuse_earlier_keys_at_about_the_requested_share() -> None:
    arrivals = LoadPlan(rate=1000, duration_s=5, duplicates=0.2, seed=9).arrivals("r")
    seen: set[str] = set()
    for arrival in arrivals:
        assert (arrival.key in seen) == arrival.duplicate  # a duplicate always repeats a key
        seen.add(arrival.key)
    share = sum(a.duplicate for a in arrivals) / len(arrivals)
    assert 0.18 < share < 0.22


def test_the_same_seed_gives_the_same_run() -> None:
    plan = LoadPlan(rate=100, duration_s=1, duplicates=0.3, seed=4)
    assert plan.arrivals("r") == plan.arrivals("r")


def test_a_nonsense_plan_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="fraction"):
        LoadPlan(rate=10, duration_s=1, duplicates=1.5)
    with pytest.raises(ValueError, match="positive"):
        LoadPlan(rate=0, duration_s=1)


def test_a_409_is_an_error_unless_the_key_was_sent_twice() -> None:
    assert not is_error("409", duplicate=True)
    assert is_error("409", duplicate=False)
    assert is_error("503", duplicate=True) and is_error("timeout", duplicate=False)
    assert not is_error("201", duplicate=False)


def _report(rate: float, p99: float) -> dict[str, Any]:
    return {"offered_rate": rate, "latency_ms": {"p99": p99}, "error_rate": 0.0}


def test_the_capacity_search_reports_the_last_rate_that_held() -> None:
    # a server whose p99 is 1 ms per 2 req/s of load: 100 ms at 200 req/s
    held, steps = find_max(lambda rate: _report(rate, rate / 2), 40, Goals(p99_ms=100), 1.5)
    assert held == 135
    assert [s["offered_rate"] for s in steps] == [40, 60, 90, 135, 202]
    assert [s["held"] for s in steps] == [True, True, True, True, False]


# -- the command, against the real system -----------------------------------------------


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with local_stack(fraud_rules=False) as running:
        yield running


def test_a_run_with_duplicates_reports_zero_duplicate_charges_counted_at_the_psp(
    stack: LocalStack, tmp_path: Path
) -> None:
    out, png = tmp_path / "load.json", tmp_path / "load.png"
    result = CliRunner().invoke(app, [
        "load", "--target", stack.url, "--api-key", stack.api_key, "--rate", "20",
        "--duration", "2", "--duplicates", "0.3", "--psp", stack.sandbox_url,
        "--psp-key", stack.psp_key, "--json", str(out), "--plot", str(png),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["requests"] == 40
    assert report["duplicate_charges"] == 0
    unique = len({a.key for a in LoadPlan(20, 2, 0.3).arrivals("x")})
    assert report["psp_charges"] == unique  # every logical payment charged exactly once
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99", "p999", "max"}
    assert report["machine"]["cores"] >= 1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_without_the_psp_duplicates_are_not_counted_and_the_report_says_so(
    stack: LocalStack, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    result = CliRunner().invoke(app, [
        "load", "--target", stack.url, "--api-key", stack.api_key, "--rate", "5",
        "--duration", "1", "--json", str(out),
    ], env={"PSP_API_BASE": "", "PSP_API_KEY": ""})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "will not be counted" in " ".join(result.output.split())
    assert json.loads(out.read_text())["duplicate_charges"] is None


def test_arrivals_beyond_the_outstanding_bound_are_counted_as_not_sent_not_queued(
    stack: LocalStack,
) -> None:
    import asyncio

    from payment_systems.load_tests.payment_load import report, run

    plan = LoadPlan(rate=50, duration_s=1)
    _, samples, errors = asyncio.run(
        run(stack.url, stack.api_key, plan, concurrency=1, max_outstanding=1)
    )
    result = report(plan, samples, errors, None)
    assert result["requests"] == 50  # every arrival is accounted for
    assert result["errors"]["not_sent"] > 0
    assert errors >= result["errors"]["not_sent"]

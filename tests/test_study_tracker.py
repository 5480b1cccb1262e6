"""The study tracker: the shipped pattern library, the reader's log, the success metrics."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payment_systems.cli import app as cli
from payment_systems.study.library import find, load_patterns
from payment_systems.study.metrics import success_metrics
from payment_systems.study.progress import Entry, ProgressLog, default_path, study_day

ROOT = Path(__file__).resolve().parents[1]


def test_every_pattern_names_a_real_module_page_and_test() -> None:
    for p in load_patterns():
        assert (ROOT / "src" / "payment_systems" / p.module).is_file(), p.module
        assert (ROOT / "docs" / p.page).is_file(), p.page
        for test in p.tests:
            path, _, name = test.partition("::")
            tree = ast.parse((ROOT / path).read_text())
            assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, test


def test_the_library_covers_the_study_plans_pattern_checklist() -> None:
    names = [p.name for p in load_patterns()]
    for checklist in ("Distributed Locks", "Idempotency", "Event Sourcing", "Outbox Pattern",
                      "Circuit Breaker", "Webhook Processing", "Reconciliation",
                      "Rate Limiting", "FX Conversion", "Load Testing"):  # fmt: skip
        assert any(n.lower().startswith(checklist.lower()) for n in names), checklist


def test_a_pattern_is_found_by_id_or_by_the_start_of_its_name() -> None:
    assert find("outbox") is not None
    assert find("Circuit breaker") == find("circuit-breaker")
    assert find("blockchain") is None


def test_the_log_appends_json_lines_and_reads_them_back(tmp_path: Path) -> None:
    log = ProgressLog(tmp_path / "log.jsonl")
    log.append(Entry("2026-11-19", lines=350, patterns=["idempotency"]))
    log.append(Entry("2026-11-20", lines=250, insights=["fence your locks"]))
    assert [e.lines for e in log.entries()] == [350, 250]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_a_corrupt_log_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"on": "2026-11-19", "lines": 10}\nnot json\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2"):
        ProgressLog(path).entries()


def test_the_default_log_lives_in_the_user_data_directory_unless_overridden() -> None:
    assert default_path({}).name == "study-log.jsonl"
    assert "payment-systems" in str(default_path({}))
    assert default_path({"PAYMENT_SYSTEMS_STUDY_LOG": "/x/y.jsonl"}) == Path("/x/y.jsonl")


def test_metrics_sum_lines_and_count_distinct_library_patterns() -> None:
    entries = [
        Entry("2026-11-19", lines=350, patterns=["idempotency", "Idempotency (prevent"]),
        Entry("2026-11-20", lines=400, patterns=["outbox"], value_usd=2_400,
              failure_modes=["dead redis", "Dead Redis"]),
    ]  # fmt: skip
    metrics = {m.name: m for m in success_metrics(entries, load_patterns())}
    assert metrics["lines studied"].value == 750
    assert metrics["lines studied"].target == 5_250
    assert metrics["patterns identified"].value == 2
    assert metrics["failure modes understood"].value == 1
    assert not metrics["business value calculated (USD/yr)"].met


def test_the_study_day_counts_from_the_first_logged_day_and_stops_at_seven() -> None:
    entries = [Entry("2026-11-19")]
    assert study_day([], date(2026, 11, 30)) == 1
    assert study_day(entries, date(2026, 11, 21)) == 3
    assert study_day(entries, date(2026, 12, 31)) == 7


def test_logging_an_unknown_pattern_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    result = CliRunner().invoke(
        cli, ["study", "log", "--pattern", "blockchain", "--log-file", str(log)]
    )
    assert result.exit_code == 2
    assert "study patterns" in result.output
    assert not log.exists()


def test_the_dashboard_shows_the_real_line_count_of_each_mapped_module(tmp_path: Path) -> None:
    log = str(tmp_path / "log.jsonl")
    assert (
        CliRunner().invoke(cli, ["study", "log", "--lines", "120", "--log-file", log]).exit_code
        == 0
    )
    result = CliRunner().invoke(
        cli, ["study", "dashboard", "--log-file", log], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    real = len((ROOT / "src/payment_systems/core/idempotency.py").read_text().splitlines())
    row = next(line for line in result.output.splitlines() if "core/idempotency.py" in line)
    assert f"{real:,}" in row
    assert "120" in result.output

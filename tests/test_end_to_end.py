"""The $1,000 trace: every component, one payment, and the books balance at the end."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payment_systems.cli import app as cli
from payment_systems.integration.end_to_end import FAILURE_POINTS, Trace, trace
from payment_systems.integration.reliability import (
    DEFAULT_DEPENDENCIES,
    parallel,
    reliability,
    request_success,
    series,
)
from payment_systems.money import Money

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def usd_trace() -> Trace:
    return trace(Money.of("1000", "USD"))


def test_the_trace_crosses_every_component_in_order(usd_trace: Trace) -> None:
    assert [s.name for s in usd_trace.steps] == [
        "merchant key", "POST /v1/payments", "duplicate retry, same key", "fraud check",
        "PSP authorize + capture", "signed webhook applied", "outbox relay -> stream",
        "ledger postings", "clock -> payout", "bank statement", "three-way reconciliation",
    ]  # fmt: skip


def test_the_duplicate_retry_is_replayed_byte_for_byte_not_charged_again(
    usd_trace: Trace,
) -> None:
    retry = next(s for s in usd_trace.steps if s.name == "duplicate retry, same key").facts
    assert retry == {
        "status_code": 201, "replayed": True, "same_payment": True, "byte_for_byte": True,
    }  # fmt: skip
    payouts = next(s for s in usd_trace.steps if s.name == "clock -> payout").facts["payouts"]
    assert [amount for _id, amount, _status in payouts] == [97_070]  # one charge, less its fee


def test_the_ledger_balances_and_the_books_reconcile_clean(usd_trace: Trace) -> None:
    assert usd_trace.balances == {
        "psp_receivable": 97_070, "merchant_payable": -97_070,  # the merchant pays the fee
    }  # fmt: skip
    assert usd_trace.reconciliation == {
        "matched": 1, "payouts_matched": 1, "breaks": 0, "clean": True,
    }  # fmt: skip


def test_the_webhook_and_the_outbox_each_carry_the_payment(usd_trace: Trace) -> None:
    facts = {s.name: s.facts for s in usd_trace.steps}
    assert "payment_intent.succeeded: stale" in facts["signed webhook applied"]["events"]
    assert facts["outbox relay -> stream"]["events"] == [
        "PaymentCreated", "PaymentScreened", "PaymentCaptured",
    ]  # fmt: skip


def test_a_foreign_currency_payment_gets_an_fx_quote_into_usd() -> None:
    result = trace(Money.of("1000", "EUR"))
    quote = next(s for s in result.steps if s.name == "FX quote").facts
    assert quote["merchant_receives"].endswith("USD")
    assert result.clean


def test_every_failure_point_names_a_test_that_exists() -> None:
    for point in FAILURE_POINTS:
        path, _, name = point.test.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in names, point


def test_demo_prints_json_a_program_can_read() -> None:
    result = CliRunner().invoke(cli, ["demo", "--amount", "250.50", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["amount"], data["currency"]) == (25_050, "USD")
    assert data["reconciliation"]["clean"] is True


def test_demo_refuses_an_amount_finer_than_the_currency_allows() -> None:
    result = CliRunner().invoke(cli, ["demo", "--amount", "10.005"])
    assert result.exit_code == 2
    assert "USD" in result.output


# -- reliability arithmetic ------------------------------------------------------------


def test_components_in_series_multiply_and_redundant_ones_combine() -> None:
    assert series([0.99, 0.99]) == pytest.approx(0.9801)
    assert parallel([0.99, 0.99]) == pytest.approx(0.9999)


def test_the_sql_fallback_takes_redis_off_the_payment_path() -> None:
    result = reliability()
    redis = next(d for d in DEFAULT_DEPENDENCIES if "Redis" in d.name).availability
    assert result.payment_creation_with_sql_fallback == pytest.approx(
        result.payment_creation / redis
    )


def test_the_breaker_keeps_reads_available_through_a_psp_outage() -> None:
    result = reliability()
    assert result.reads_with_breaker > result.reads_without_breaker


def test_retries_help_independent_failures_only_per_request() -> None:
    assert request_success(0.001, 1) == pytest.approx(0.999)
    assert request_success(0.001, 3) == pytest.approx(1 - 1e-9)
    with pytest.raises(ValueError, match="at least 1"):
        request_success(0.001, 0)

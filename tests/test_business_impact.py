"""Business figures come from named inputs; disagreements with the study plan are explicit."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from payment_systems.business.impact import (
    cases,
    chargeback_fight,
    duplicate_charge_cost,
    fx_markup_revenue,
    reconciliation_cost,
    settlement_float,
    three_ds_breakeven_fraud_rate,
    week_total,
)
from payment_systems.cli import app
from payment_systems.money import Money


def test_the_idempotency_case_reproduces_53k_and_265x() -> None:
    cost = duplicate_charge_cost()
    assert (cost.total, cost.roi) == (Money.of("53000.00", "USD"), 265)


def test_halving_the_duplicate_rate_halves_the_loss() -> None:
    base = duplicate_charge_cost(duplicate_rate=Decimal("0.001")).total
    half = duplicate_charge_cost(duplicate_rate=Decimal("0.0005")).total
    assert half.amount_minor * 2 == base.amount_minor


def test_the_reconciliation_case_reproduces_9k_a_month() -> None:
    assert reconciliation_cost().total_per_month == Money.of("9000.00", "USD")


def test_the_fx_case_reproduces_250k_and_98_percent() -> None:
    fx = fx_markup_revenue()
    assert (fx.revenue, fx.margin) == (Money.of("250000.00", "USD"), Decimal("0.98"))


def test_the_chargeback_rule_says_fight_but_saves_2400_not_24000_a_year() -> None:
    decision = chargeback_fight()
    assert decision.fight
    assert decision.annual_gain == Money.of("2400.00", "USD")  # the study plan states $24,000


def test_a_lower_win_rate_flips_the_decision_to_accept() -> None:
    assert not chargeback_fight(win_rate=Decimal("0.25")).fight  # 25% x $90 = $22.50 < $25


def test_3ds_pays_above_the_break_even_fraud_rate() -> None:
    assert three_ds_breakeven_fraud_rate() == Decimal("0.03125")
    assert three_ds_breakeven_fraud_rate(margin=Decimal("0.40")) == Decimal("0.0625")


def test_the_week_total_is_3_77m_not_4m() -> None:
    assert week_total().annual == Money.of("3768000.00", "USD")


def test_every_case_that_disagrees_is_one_the_docs_explain() -> None:
    disagreeing = {c.name for c in cases() if c.agrees is False}
    assert disagreeing == {
        "Chargebacks: annual savings from fighting",
        "Week 1: total annual value",
    }


def test_impact_json_lists_every_case() -> None:
    result = CliRunner().invoke(app, ["impact", "--json"])
    rows = json.loads(result.output)
    assert len(rows) == len(cases())
    assert {"case", "inputs", "computed", "study plan says", "agrees"} <= set(rows[0])


def test_settlement_float_is_a_days_volume_per_day_in_transit_at_the_rate() -> None:
    f = settlement_float(Money.of("500000", "USD"), days_in_transit=3, annual_rate=Decimal("0.05"))
    assert str(f.average_float) == "1500000.00 USD"
    assert str(f.annual_interest) == "75000.00 USD"
    assert str(f.per_day_earlier) == "25000.00 USD"


def test_a_negative_settlement_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        settlement_float(days_in_transit=-1)

"""Settlement risk: the $100k scenario, and what each hedging strategy does to the tail."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payment_systems.fx.settlement import (
    Position,
    compare_strategies,
    gbm_paths,
    net_by_currency,
    pnl_usd,
    sample_book,
)
from payment_systems.money import Money


def test_a_1_percent_fall_on_10m_of_euros_loses_100k() -> None:
    position = Position(Money.of("9174311.93", "EUR"), Decimal("1.0900"))
    assert pnl_usd(position, Decimal("1.0791")) == Money.of("-100000.00", "USD")


def test_a_rising_euro_is_a_gain_of_the_same_size() -> None:
    position = Position(Money.of("9174311.93", "EUR"), Decimal("1.0900"))
    assert pnl_usd(position, Decimal("1.1009")) == Money.of("100000.00", "USD")


def test_gbm_paths_are_seeded_and_centred_on_the_spot() -> None:
    paths = gbm_paths(1.09, 0.08, 2, 20_000, seed=3)
    assert paths == gbm_paths(1.09, 0.08, 2, 20_000, seed=3)
    assert abs(sum(paths) / len(paths) - 1.09) < 0.001


def test_netting_offsets_flows_in_the_same_currency() -> None:
    book = [
        Position(Money.of("1000.00", "EUR"), Decimal("1.10")),
        Position(Money.of("-400.00", "EUR"), Decimal("1.10")),
    ]
    assert net_by_currency(book) == {"EUR": (Decimal("600.00"), Decimal("660.0000"))}


def test_a_forward_removes_the_tail_and_netting_makes_hedging_cheaper() -> None:
    book, spot = sample_book()
    none, forward, netting, net_forward = compare_strategies(book, spot, paths=5_000)
    assert forward.p99 == pytest.approx(forward.p50)  # known in advance: no tail at all
    assert none.p99 > 10 * forward.p99
    assert netting.p99 < none.p99  # fewer conversions: less spread paid
    assert net_forward.p99 < forward.p99  # the forward covers only the net
    assert none.expected_shortfall_99 >= none.p99


def test_more_volatility_means_a_fatter_tail() -> None:
    book, spot = sample_book()
    calm = compare_strategies(book, spot, volatility=0.04, paths=5_000)[0]
    wild = compare_strategies(book, spot, volatility=0.16, paths=5_000)[0]
    assert wild.p99 > calm.p99

"""FX edge cases: each a typed error or a guarantee, against real Redis and the sandbox."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment_systems.core.ledger import Ledger
from payment_systems.currencies import UnknownCurrency
from payment_systems.fx.converter import (
    CachedRates,
    FxConverter,
    InvalidRate,
    RateNotAvailable,
    RatesUnavailable,
    SandboxRates,
    StaticRates,
    book_conversion,
)
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.money import Money

TABLE = {"EUR": "0.92", "JPY": "150", "KWD": "0.307", "GBP": "0.79"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _converter(client: redis.Redis, table: dict[str, str] = TABLE, **kw: object) -> FxConverter:
    clock = Clock()
    rates = CachedRates(StaticRates(table), client, clock=clock)
    return FxConverter(rates, clock=clock, **kw)  # type: ignore[arg-type]


def test_a_currency_that_does_not_exist_is_a_typed_error(redis_client: redis.Redis) -> None:
    with pytest.raises(UnknownCurrency, match="'XYZ'"):
        _converter(redis_client).quote(Money.of("10.00", "USD"), "XYZ")


def test_a_real_currency_without_a_rate_is_rate_not_available(redis_client: redis.Redis) -> None:
    with pytest.raises(RateNotAvailable, match="no exchange rate for CHF"):
        _converter(redis_client).quote(Money.of("10.00", "USD"), "CHF")


@pytest.mark.parametrize("bad", ["0", "-0.92", "NaN", "Infinity"])
def test_a_zero_negative_or_non_finite_rate_is_refused(redis_client: redis.Redis, bad: str) -> None:
    with pytest.raises(InvalidRate, match="refusing to convert"):
        _converter(redis_client, {**TABLE, "EUR": bad}).quote(Money.of("10.00", "USD"), "EUR")


def test_jpy_has_no_decimals_and_kwd_has_three(redis_client: redis.Redis) -> None:
    fx = _converter(redis_client, markup=Decimal(0))
    assert fx.quote(Money.of("10.00", "USD"), "JPY").converted == Money(1500, "JPY")
    assert fx.quote(Money.of("10.00", "USD"), "KWD").converted == Money(3070, "KWD")


def test_the_customer_gets_the_rate_minus_the_markup_rounded_down(
    redis_client: redis.Redis,
) -> None:
    quote = _converter(redis_client).quote(Money.of("100.00", "USD"), "EUR")
    assert quote.mid_rate == Decimal("0.92")
    assert quote.customer_rate == Decimal("0.897")
    assert quote.converted == Money.of("89.70", "EUR")
    assert quote.revenue == Money.of("2.30", "EUR")  # 2.5% of 92.00


def test_cross_rates_go_through_the_base_currency(redis_client: redis.Redis) -> None:
    fx = _converter(redis_client)
    assert fx.mid_rate("EUR", "JPY") == Decimal("150") / Decimal("0.92")


def test_a_locked_quote_is_honoured_until_expiry_then_requoted(redis_client: redis.Redis) -> None:
    clock = Clock()
    provider = StaticRates(dict(TABLE))
    fx = FxConverter(
        CachedRates(provider, redis_client, ttl_s=1, clock=clock), clock=clock, quote_ttl_s=600
    )
    quote = fx.quote(Money.of("100.00", "USD"), "EUR")
    provider._rates["EUR"] = Decimal("0.80")  # the market moves mid-transaction
    clock.now += 300
    assert fx.honour(quote) is quote
    clock.now += 301
    requoted = fx.honour(quote)
    assert requoted.id != quote.id
    assert requoted.mid_rate == Decimal("0.80")


def test_rates_are_cached_so_the_provider_is_called_once_per_ttl(redis_client: redis.Redis) -> None:
    clock = Clock()
    rates = CachedRates(StaticRates(TABLE), redis_client, ttl_s=300, clock=clock)
    fx = FxConverter(rates, clock=clock)
    for _ in range(100):
        fx.quote(Money.of("1.00", "USD"), "EUR")
        clock.now += 2  # 200 s in all: within one TTL
    assert rates.provider_calls == 1


class Down:
    """A provider that is down (the failure under test; Redis is real)."""

    def rates(self, base: str) -> dict[str, Decimal]:
        raise RatesUnavailable(f"provider timed out fetching {base}")


def test_a_provider_timeout_serves_a_recent_cached_rate(redis_client: redis.Redis) -> None:
    clock = Clock()
    CachedRates(StaticRates(TABLE), redis_client, clock=clock).rates("USD")  # warm the cache
    clock.now += 1800  # past the 5 min TTL, within the 1 h staleness bound
    rates, age = CachedRates(Down(), redis_client, clock=clock).rates("USD")
    assert rates["EUR"] == Decimal("0.92")
    assert age == 1800


def test_a_provider_timeout_with_only_a_stale_rate_fails_closed(redis_client: redis.Redis) -> None:
    clock = Clock()
    CachedRates(StaticRates(TABLE), redis_client, clock=clock).rates("USD")
    clock.now += 3601
    with pytest.raises(RatesUnavailable, match="refusing to quote"):
        CachedRates(Down(), redis_client, clock=clock).rates("USD")


def test_sandbox_rates_are_decimals_and_move_with_the_sandbox_clock(
    psp_sandbox: SandboxServer, psp_key: str
) -> None:
    provider = SandboxRates(psp_sandbox.url, psp_key)
    before = provider.rates("usd")
    assert isinstance(before["EUR"], Decimal)
    httpx.post(
        f"{psp_sandbox.url}/_sandbox/clock/advance",
        data={"seconds": 30 * 86400},
        auth=(psp_key, ""),
    )
    assert provider.rates("usd")["EUR"] != before["EUR"]


def test_a_sandbox_timeout_is_rates_unavailable(psp_sandbox: SandboxServer, psp_key: str) -> None:
    httpx.post(
        f"{psp_sandbox.url}/_sandbox/faults", auth=(psp_key, ""),
        json={"kind": "timeout", "hold_s": 2, "path_prefix": "/v1/exchange_rates",
              "duration_s": 30},
    )  # fmt: skip
    with pytest.raises(RatesUnavailable):
        SandboxRates(psp_sandbox.url, psp_key, timeout_s=0.2).rates("usd")


def test_the_conversion_posts_a_balanced_journal_with_fx_revenue(redis_client: redis.Redis) -> None:
    quote = _converter(redis_client).quote(Money.of("100.00", "USD"), "EUR")
    ledger = Ledger()
    book_conversion(ledger, quote, "fx_1")
    assert ledger.balance("fx_revenue", "EUR") == -Money.of("2.30", "EUR")
    assert all(total == 0 for total in ledger.trial_balance().values())


def test_a_static_rates_file_is_read_as_decimals(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"base": "USD", "rates": {"EUR": "0.9200"}}))
    assert StaticRates(path).rates("USD") == {"EUR": Decimal("0.9200")}


# -- properties -------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=10**9)
targets = st.sampled_from(["EUR", "JPY", "KWD", "GBP"])
markups = st.sampled_from([Decimal(0), Decimal("0.01"), Decimal("0.025")])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts, targets, markups)
def test_conversion_rounds_down_by_less_than_one_minor_unit(
    redis_client: redis.Redis, cents: int, target: str, markup: Decimal
) -> None:
    rates = CachedRates(StaticRates(TABLE), redis_client, clock=Clock())
    quote = FxConverter(rates, markup=markup).quote(Money(cents, "USD"), target)
    exact = Money(cents, "USD").amount * quote.customer_rate
    got = quote.converted.amount
    assert got <= exact
    assert exact - got < Decimal(1).scaleb(-quote.converted.exponent)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts, targets, markups)
def test_a_round_trip_never_creates_money(
    redis_client: redis.Redis, cents: int, target: str, markup: Decimal
) -> None:
    fx = FxConverter(CachedRates(StaticRates(TABLE), redis_client, clock=Clock()), markup=markup)
    there = fx.quote(Money(cents, "USD"), target).converted
    if there.amount_minor == 0:
        return
    back = fx.quote(there, "USD").converted
    assert back.amount_minor <= cents


def test_quotes_from_one_snapshot_offer_no_arbitrage_loop_even_at_mid() -> None:
    from payment_systems.fx.arbitrage import opportunities, quotes_from_base

    per_usd = {"EUR": Decimal("0.9213"), "JPY": Decimal("151.37"), "KWD": Decimal("0.3071")}
    assert opportunities(quotes_from_base(per_usd, "USD")) == []


def test_one_stale_quote_opens_a_loop_worth_exactly_the_move() -> None:
    from payment_systems.fx.arbitrage import opportunities, quotes_from_base

    quotes = quotes_from_base({"EUR": Decimal("0.92"), "GBP": Decimal("0.79")}, "USD")
    quotes["USD"] = {**quotes["USD"], "GBP": Decimal("0.79") * Decimal("1.002")}
    [loop] = opportunities(quotes)
    assert loop.profit_bps == Decimal("20.00")

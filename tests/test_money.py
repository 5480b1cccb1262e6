"""Money: integer minor units, ISO 4217 exponents, explicit rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_systems.money import (
    AmountTooPrecise,
    CurrencyMismatch,
    Money,
    MoneyError,
    Rounding,
    UnknownCurrency,
)

CURRENCIES = ["USD", "EUR", "JPY", "KWD", "BHD", "IQD", "CLF", "GBP", "KRW"]


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0),
        ("USD", 2), ("EUR", 2),
        ("KWD", 3), ("BHD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
        ("CLF", 4),
    ],
)  # fmt: skip
def test_exponent_is_the_iso_4217_minor_unit(currency: str, exponent: int) -> None:
    assert Money(0, currency).exponent == exponent


def test_iqd_uses_iso_three_decimals_not_cldr_display_digits() -> None:
    # babel's get_currency_precision("IQD") is 0; storing dinars in whole units
    # would make 1.500 IQD indistinguishable from 1 IQD.
    assert Money.of("1.500", "IQD").amount_minor == 1500


def test_of_parses_a_decimal_string_into_minor_units() -> None:
    assert Money.of("12.34", "USD") == Money(1234, "USD")


def test_of_accepts_a_decimal() -> None:
    assert Money.of(Decimal("0.10"), "EUR") == Money(10, "EUR")


def test_lowercase_currency_codes_are_normalised() -> None:
    assert Money(100, "usd").currency == "USD"


def test_a_float_amount_is_rejected_with_a_type_error_that_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"pass a str such as '12\.34'"):
        Money.of(0.1, "USD")  # type: ignore[arg-type]


def test_a_float_minor_amount_is_rejected() -> None:
    with pytest.raises(TypeError, match="float"):
        Money(10.0, "USD")  # type: ignore[arg-type]


def test_too_many_decimals_are_rejected_without_a_rounding_mode() -> None:
    with pytest.raises(AmountTooPrecise, match=r"1\.005 has more than 2 decimal place"):
        Money.of("1.005", "USD")


def test_too_many_decimals_round_with_the_named_mode() -> None:
    assert Money.of("1.005", "USD", rounding=Rounding.HALF_UP) == Money(101, "USD")
    assert Money.of("1.005", "USD", rounding=Rounding.HALF_EVEN) == Money(100, "USD")


def test_jpy_has_no_decimals_at_all() -> None:
    with pytest.raises(AmountTooPrecise):
        Money.of("100.5", "JPY")


def test_unknown_currency_names_the_code_in_the_message() -> None:
    with pytest.raises(UnknownCurrency, match="'XYZ'") as info:
        Money.of("1.00", "XYZ")
    assert info.value.code == "unknown_currency"
    assert info.value.to_problem()["status"] == 400


def test_a_metal_code_without_minor_units_is_refused() -> None:
    with pytest.raises(UnknownCurrency, match="no minor unit"):
        Money(1, "XAU")


def test_garbage_amount_is_a_money_error_not_a_crash() -> None:
    with pytest.raises(MoneyError, match="not a decimal number"):
        Money.of("12,34", "USD")


def test_infinite_amount_is_refused() -> None:
    with pytest.raises(MoneyError, match="finite"):
        Money.of("Infinity", "USD")


def test_adding_two_currencies_raises_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch, match="cannot add USD and EUR"):
        Money(1, "USD") + Money(1, "EUR")


def test_comparing_two_currencies_raises_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch):
        assert Money(1, "USD") < Money(2, "EUR")


def test_negation_and_subtraction() -> None:
    assert -Money(5, "USD") == Money(-5, "USD")
    assert Money(5, "USD") - Money(7, "USD") == Money(-2, "USD")


def test_ordering_within_one_currency() -> None:
    assert Money(1, "USD") < Money(2, "USD") <= Money(2, "USD")
    assert Money(3, "USD") > Money(2, "USD") >= Money(2, "USD")


def test_money_is_immutable() -> None:
    m = Money(1, "USD")
    with pytest.raises(AttributeError):
        m.amount_minor = 2  # type: ignore[misc]


def test_allocate_100_dollars_three_ways_loses_no_cent() -> None:
    parts = Money.of("100.00", "USD").allocate([1, 1, 1])
    assert [p.amount for p in parts] == [Decimal("33.34"), Decimal("33.33"), Decimal("33.33")]


def test_allocate_never_gives_a_leftover_cent_to_a_zero_ratio() -> None:
    parts = Money(100, "USD").allocate([0, 1, 1, 1])
    assert parts[0] == Money(0, "USD")


def test_allocate_a_negative_amount_keeps_the_sign_on_every_part() -> None:
    parts = Money(-100, "USD").allocate([1, 2])
    assert parts == [Money(-33, "USD"), Money(-67, "USD")]


def test_allocate_rejects_all_zero_ratios() -> None:
    with pytest.raises(ValueError, match="all be zero"):
        Money(100, "USD").allocate([0, 0])


def test_multiply_rounds_with_the_named_mode() -> None:
    fee = Money.of("10.00", "USD").multiply(Decimal("0.029"), rounding=Rounding.HALF_UP)
    assert fee == Money(29, "USD")


def test_format_uses_the_locale_and_iso_decimals() -> None:
    assert Money.of("1234.5", "USD").format("en_US") == "$1,234.50"
    assert Money.of("1234.5", "EUR").format("de_DE") == "1.234,50\xa0€"
    assert Money(1234, "JPY").format("ja_JP") == "￥1,234"
    assert Money.of("1.5", "KWD").format("en_US") == "KWD1.500"


# -- properties -------------------------------------------------------------

amounts = st.integers(min_value=-(10**15), max_value=10**15)
currencies = st.sampled_from(CURRENCIES)
ratios = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12).filter(any)


@given(amounts, currencies, ratios)
def test_allocations_always_sum_to_the_original(minor: int, currency: str, rs: list[int]) -> None:
    money = Money(minor, currency)
    parts = money.allocate(rs)
    assert sum(p.amount_minor for p in parts) == minor
    assert all(p.currency == currency for p in parts)


@given(amounts, currencies, ratios)
def test_each_allocated_part_is_within_one_minor_unit_of_its_exact_share(
    minor: int, currency: str, rs: list[int]
) -> None:
    parts = Money(minor, currency).allocate(rs)
    for part, r in zip(parts, rs, strict=True):
        exact = Decimal(minor) * r / sum(rs)
        assert abs(Decimal(part.amount_minor) - exact) < 1


@given(amounts, currencies)
def test_minor_units_round_trip_through_decimal(minor: int, currency: str) -> None:
    money = Money(minor, currency)
    assert Money.of(money.amount, currency) == money
    assert Money.of(str(money.amount), currency) == money


@given(amounts, amounts, amounts, currencies)
def test_addition_is_associative(a: int, b: int, c: int, currency: str) -> None:
    x, y, z = Money(a, currency), Money(b, currency), Money(c, currency)
    assert (x + y) + z == x + (y + z)

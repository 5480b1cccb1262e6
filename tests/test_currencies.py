"""The ISO 4217 table behind Money."""

from __future__ import annotations

import pytest

from payment_systems.currencies import UnknownCurrency, is_known, minor_units, normalize_code


def test_codes_are_upper_cased_and_trimmed() -> None:
    assert normalize_code(" usd ") == "USD"


@pytest.mark.parametrize("bad", ["US", "USDX", "12$", "", "ÜSD"])
def test_malformed_codes_are_unknown_currencies(bad: str) -> None:
    with pytest.raises(UnknownCurrency):
        minor_units(bad)


def test_a_non_string_code_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="currency must be a str"):
        normalize_code(840)  # type: ignore[arg-type]


def test_is_known_answers_without_raising() -> None:
    assert is_known("EUR")
    assert not is_known("XYZ")
    assert not is_known("XAU")

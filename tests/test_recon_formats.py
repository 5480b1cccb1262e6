"""Reconciliation files are read strictly: an amount is exact or it is an error naming the cell.

Finding 13: the old parser read ``"1.0 "`` as 10 cents and ``"1._5"`` as 15,
silently. A reconciliation built on that reports breaks that do not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iso4217 import Currency

from payment_systems.core.recon_formats import (
    BANK_COLUMNS,
    LEDGER_COLUMNS,
    PSP_COLUMNS,
    MalformedAmount,
    MalformedField,
    read_bank,
    read_ledger,
    read_psp,
    to_major,
    to_minor,
)
from payment_systems.core.reconciliation import reconcile_files
from payment_systems.errors import PaymentSystemsError

# Every ISO 4217 currency that has minor units: exponents 0, 2, 3 and 4.
CURRENCIES = sorted(c.code for c in Currency if c.exponent is not None)


def _files(tmp: Path, ledger_amount: str = "1.00", psp_gross: str = "1.00") -> list[Path]:
    """One charge on each side and its payout in the bank: the smallest clean set."""
    ledger, psp, bank = tmp / "ledger.csv", tmp / "psp.csv", tmp / "bank.csv"
    ledger.write_text(
        ",".join(LEDGER_COLUMNS) + "\n"
        f"ch_1,pay_1,charge,{ledger_amount},0.33,usd,2026-01-01T00:00:00Z\n"
    )
    psp.write_text(
        ",".join(PSP_COLUMNS) + "\n"
        "txn_1,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z,usd,"
        f"{psp_gross},0.33,0.67,charge,ch_1,po_1\n"
        "txn_2,2026-01-02T00:00:00Z,2026-01-02T00:00:00Z,usd,-0.67,0.00,-0.67,payout,po_1,po_1\n"
    )
    bank.write_text(
        ",".join(BANK_COLUMNS) + "\n2026-01-02,2026-01-02,0.67,usd,CRDT,po_1,STRIPE PAYOUT\n"
    )
    return [ledger, psp, bank]


def test_amount_with_trailing_space_is_not_misscaled(tmp_path: Path) -> None:
    assert to_minor("1.0 ", "usd") == 100  # was 10
    assert to_minor("12.3 ", "usd") == 1230  # was 123
    assert to_minor(" -0.5\t", "usd") == -50
    assert to_minor(" 7 ", "jpy") == 7
    # and through the fast file engine, where the two sides are not textually equal
    ledger, psp, bank = _files(tmp_path, ledger_amount="1.0 ", psp_gross="1.00")
    report = reconcile_files(ledger, psp, bank, cutoff=2_000_000_000)
    assert report.breaks == []
    assert report.matched == 1


# "\u0661" is ARABIC-INDIC DIGIT ONE: int() accepts it, an amount column must not.
@pytest.mark.parametrize(
    "text", ["1._5", "1e3", "", " ", "1.234", "1.", ".5", "+-1", "1,00", "\u0661"]
)
def test_amounts_that_are_not_plain_decimals_are_errors(text: str) -> None:
    with pytest.raises(MalformedAmount) as caught:
        to_minor(text, "usd")
    assert caught.value.code == "malformed_amount"
    assert isinstance(caught.value, PaymentSystemsError)
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do
    assert repr(text) in caught.value.message


def test_too_many_decimals_says_how_many_the_currency_allows() -> None:
    with pytest.raises(MalformedAmount, match=r"more decimals than USD allows \(2\)"):
        to_minor("1.005", "usd")
    with pytest.raises(MalformedAmount, match=r"more decimals than JPY allows \(0\)"):
        to_minor("5.0", "jpy")
    assert to_minor("1.005", "kwd") == 1005


@pytest.mark.parametrize("bad", ["1._5", "1e3", "", "1.234"])
def test_malformed_amount_names_file_and_line(tmp_path: Path, bad: str) -> None:
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(
        ",".join(LEDGER_COLUMNS) + "\n"
        "ch_a,pay_1,charge,1.00,0.33,usd,2026-01-01T00:00:00Z\n"
        f"ch_b,pay_2,charge,{bad},0.33,usd,2026-01-01T00:00:00Z\n"
    )
    with pytest.raises(MalformedAmount) as caught:
        list(read_ledger(ledger))
    error = caught.value
    assert (error.path, error.line, error.field, error.text) == (ledger, 3, "amount", bad)
    assert f"{ledger}, line 3, column 'amount': {bad!r}" in str(error)
    problem = error.to_problem()
    assert (problem["code"], problem["line"], problem["field"]) == ("malformed_amount", 3, "amount")


def test_every_amount_column_of_every_file_is_checked(tmp_path: Path) -> None:
    _, psp, bank = _files(tmp_path)
    psp.write_text(psp.read_text().replace("0.33,0.67", "0.33,0.6_7"))
    with pytest.raises(MalformedAmount, match=r"psp\.csv, line 2, column 'net'"):
        list(read_psp(psp))
    bank.write_text(bank.read_text().replace(",0.67,", ",0.67 0,"))
    with pytest.raises(MalformedAmount, match=r"bank\.csv, line 2, column 'amount'"):
        list(read_bank(bank))


def test_identical_garbage_on_both_sides_does_not_match(tmp_path: Path) -> None:
    """The fast engine compares equal text without parsing; it must still refuse nonsense."""
    ledger, psp, bank = _files(tmp_path, ledger_amount="1._5", psp_gross="1._5")
    with pytest.raises(MalformedAmount, match=r"ledger\.csv, line 2, column 'amount'"):
        reconcile_files(ledger, psp, bank, cutoff=2_000_000_000)


def test_an_unknown_currency_or_a_short_row_names_the_line(tmp_path: Path) -> None:
    ledger, _, _ = _files(tmp_path)
    ledger.write_text(ledger.read_text().replace(",usd,", ",xyz,"))
    with pytest.raises(MalformedField, match=r"line 2, column 'currency': 'xyz'"):
        list(read_ledger(ledger))
    ledger.write_text(",".join(LEDGER_COLUMNS) + "\n\nch_1,pay_1,charge,1.00\n")
    with pytest.raises(MalformedField, match=r"line 3: 4 fields where the header has 7"):
        list(read_ledger(ledger))


@given(
    currency=st.sampled_from(CURRENCIES),
    minor=st.integers(min_value=-(10**20), max_value=10**20),
    pad=st.sampled_from(["", " ", "\t", "  "]),
)
def test_formatting_then_parsing_round_trips_for_every_currency_exponent(
    currency: str, minor: int, pad: str
) -> None:
    text = to_major(minor, currency)
    assert to_minor(text, currency) == minor
    assert to_minor(pad + text + pad, currency) == minor
    assert to_minor(text, currency.lower()) == minor


def test_the_round_trip_covers_every_iso_exponent() -> None:
    assert {Currency(code).exponent for code in CURRENCIES} == {0, 2, 3, 4}


def test_the_cli_reports_a_bad_file_cleanly_with_exit_code_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from payment_systems.cli import app

    ledger, psp, bank = _files(tmp_path, ledger_amount="1._5")
    result = CliRunner().invoke(app, ["reconcile", str(ledger), str(psp), str(bank)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught MalformedAmount
    assert "Traceback" not in result.output
    assert "error [malformed_amount]:" in result.output
    assert "ledger.csv, line 2, column 'amount': '1._5'" in result.output

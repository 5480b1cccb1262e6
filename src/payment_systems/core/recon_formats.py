"""The three files reconciliation reads, streamed row by row.

All three are sorted by their reference column (the generator and
`export_ledger` write them so; `reconcile` refuses unsorted input with a
message saying how to sort it). Amounts are decimal major units, as in the
reports the sources publish, and are parsed straight to integer minor units.

**ledger.csv** (our side, `export_ledger`)::

    reference,payment_id,type,amount,fee,currency,booked_at
    ch_3Nf…,pay_81c…,charge,20.00,0.88,usd,2026-11-20T14:03:11Z

**psp.csv** (Stripe's itemized balance report columns)::

    balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,
    reporting_category,source_id,automatic_payout_id

**bank.csv** (a CAMT.053-like statement, one row per deposit)::

    booking_date,value_date,amount,currency,credit_debit,end_to_end_id,remittance_information
    2026-11-22,2026-11-22,3905.36,usd,CRDT,po_1Ox…,STRIPE PAYOUT

``end_to_end_id`` carries the payout id, as PSPs put it in the remittance.

Reading is strict on purpose. A reconciliation that silently mis-reads
``"1.0 "`` as ten cents reports a break that does not exist (or hides one
that does), and nobody can tell from the report. So every amount must be an
optional sign, ASCII digits, and optionally ``.`` with at most the currency's
ISO 4217 minor-unit digits; surrounding whitespace is stripped (spreadsheets
pad cells) and means nothing. Anything else (``"1._5"``, ``"1e3"``, ``""``,
``"1.234"`` for USD) raises `MalformedAmount`, whose message names the file,
the line and the column, so whoever produced the file can fix that cell.
"""

from __future__ import annotations

import csv
import decimal
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

from payment_systems.currencies import UnknownCurrency, minor_units
from payment_systems.errors import PaymentSystemsError

LEDGER_COLUMNS = ["reference", "payment_id", "type", "amount", "fee", "currency", "booked_at"]
PSP_COLUMNS = [
    "balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee",
    "net", "reporting_category", "source_id", "automatic_payout_id",
]  # fmt: skip
BANK_COLUMNS = [
    "booking_date", "value_date", "amount", "currency", "credit_debit", "end_to_end_id",
    "remittance_information",
]  # fmt: skip


class ReconFileError(PaymentSystemsError, ValueError):
    """A reconciliation input file cannot be read as it is; the message says where and why.

    A `ValueError` too, so callers that predate the typed errors still catch it.
    """

    code = "recon_file_invalid"
    http_status = 422


class UnsortedInput(ReconFileError):
    """A file is not sorted by its reference column."""

    code = "recon_file_unsorted"


class MalformedField(ReconFileError):
    """One field of one row cannot be read.

    ``path``, ``line`` (the physical line, 1 = the header) and ``field`` are
    optional because `to_minor` is also called on strings that come from no
    file; the CSV readers always fill them in.
    """

    code = "malformed_field"

    def __init__(
        self,
        problem: str,
        *,
        text: str,
        field: str | None = None,
        path: Path | str | None = None,
        line: int | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                str(path) if path is not None else "",
                f"line {line}" if line is not None else "",
                f"column {field!r}" if field is not None else "",
            )
            if part
        )
        super().__init__(
            f"{where}: {problem}" if where else problem,
            text=text,
            field=field,
            path=None if path is None else str(path),
            line=line,
        )
        self.text, self.field, self.path, self.line = text, field, path, line


class MalformedAmount(MalformedField):
    """An amount is not a plain decimal with at most the currency's minor-unit digits."""

    code = "malformed_amount"

    def __init__(
        self,
        text: str,
        currency: str,
        *,
        field: str | None = None,
        path: Path | str | None = None,
        line: int | None = None,
    ) -> None:
        exponent = _exponent(currency)
        code = currency.strip().upper()
        decimals = _DECIMALS.fullmatch(text)
        if decimals is not None and len(decimals[1]) > exponent:
            problem = f"{text!r} has more decimals than {code} allows ({exponent})"
        else:
            problem = f"{text!r} is not a {code} amount"
        shape = (
            f"an optional sign, digits, and at most {exponent} decimals after a '.'"
            if exponent
            else f"an optional sign and digits only ({code} has no decimals)"
        )
        super().__init__(
            f"{problem}; write {shape}, e.g. {to_major(-123456, currency)!r}",
            text=text,
            field=field,
            path=path,
            line=line,
        )
        self.currency = code


_DECIMALS = re.compile(r"\s*[+-]?[0-9]+\.([0-9]+)\s*")


@cache
def _exponent(currency: str) -> int:
    return int(minor_units(currency))


@cache
def _pattern(exponent: int, *, padded: bool = True) -> re.Pattern[str]:
    """Sign, ASCII digits, and up to ``exponent`` decimals; ``padded`` allows whitespace around.

    ``[0-9]``, not ``\\d``: ``\\d`` also matches other scripts' digits, which
    `int` would silently accept. Possessive quantifiers (``++``) because there is
    nothing to backtrack into, and they make the match measurably cheaper.
    """
    fraction = rf"(?:\.[0-9]{{1,{exponent}}}+)?+" if exponent else ""
    amount = rf"[+-]?+[0-9]++{fraction}"
    return re.compile(rf"\s*+{amount}\s*+" if padded else amount)


@cache
def _amount_check(currency: str) -> Callable[[str], re.Match[str] | None]:
    """The validator of one amount in ``currency`` (``"usd"`` or ``"USD"``), whitespace allowed."""
    return _pattern(_exponent(currency)).fullmatch


@cache
def _row_check(currency: str, count: int) -> Callable[[str], re.Match[str] | None]:
    """The validator of ``count`` unpadded amounts joined by commas: one regex call per row.

    A field containing a comma adds one, so it can never pass as ``count`` amounts.
    """
    unpadded = _pattern(_exponent(currency), padded=False).pattern
    return re.compile(",".join([unpadded] * count)).fullmatch


# Exact at any length: the default context's 28 digits would round a long amount.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, traps=[decimal.Inexact, decimal.Rounded])


def to_minor(text: str, currency: str) -> int:
    """``"-12.5"`` USD → ``-1250``: exact, via `Decimal`, never a float.

    Surrounding whitespace is stripped (``"1.0 "`` is 100 cents); anything that
    is not an optional sign, digits and at most the currency's minor-unit
    decimals raises `MalformedAmount` rather than being read as some other
    number.

    Examples:
        >>> to_minor("20.00", "usd"), to_minor("-0.5", "usd"), to_minor("1000", "jpy")
        (2000, -50, 1000)
        >>> to_minor("1.0 ", "usd")
        100
    """
    exponent = _exponent(currency)
    if _pattern(exponent).fullmatch(text) is None:
        raise MalformedAmount(text, currency)
    return int(Decimal(text.strip()).scaleb(exponent, _EXACT))


def to_major(minor: int, currency: str) -> str:
    """The inverse of `to_minor`, for writing files."""
    exponent = _exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


@cache
def _midnight(date: str) -> int:
    return int(datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def _ts(text: str) -> int:
    """``2026-11-20`` or ``2026-11-20T14:03:11Z`` → unix time (strptime is too slow per row)."""
    base = _midnight(text[:10])
    if len(text) == 10:
        return base
    return base + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class LedgerRow:
    reference: str
    payment_id: str
    kind: str
    amount: int
    fee: int
    currency: str
    at: int


@dataclass(frozen=True, slots=True)
class PspRow:
    reference: str  # source_id: the charge, refund or payout
    txn_id: str
    kind: str
    gross: int
    fee: int
    net: int
    currency: str
    at: int
    payout_id: str


@dataclass(frozen=True, slots=True)
class BankRow:
    reference: str  # the payout id
    amount: int
    currency: str
    at: int


# The money columns of all three files; `_rows` checks each against the row's currency.
_AMOUNT_COLUMNS = frozenset({"amount", "fee", "gross", "net"})


def _rows(path: Path, columns: list[str], key: str) -> Iterator[list[str]]:
    """Rows as lists in ``columns`` order; checks the header, the sort on ``key`` and the amounts.

    Amounts are validated here, not only in `to_minor`, for two reasons: this
    is the one place that knows the file and the line to name in the error,
    and `reconcile_files` matches textually identical rows without ever
    parsing them, so ``"1._5"`` on both sides would otherwise "match".
    """
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = set(columns) - set(header)
        if missing:
            raise ReconFileError(
                f"{path}: missing column(s) {sorted(missing)}; expected {columns}",
                path=str(path),
            )
        order = [header.index(c) for c in columns]
        k = columns.index(key)
        c = columns.index("currency")
        amounts = [i for i, name in enumerate(columns) if name in _AMOUNT_COLUMNS]
        # one amount column is checked twice: itemgetter of a single index returns no tuple
        picked = amounts if len(amounts) > 1 else amounts * 2
        get_amounts = operator.itemgetter(*picked)
        width = len(header)
        previous = ""
        currency: str | None = None  # the checks below are looked up on the first row
        identity = order == list(range(len(columns)))
        for raw in reader:
            if len(raw) != width:
                if not raw:
                    continue  # a blank line, typically the last one
                raise MalformedField(
                    f"{len(raw)} fields where the header has {width}",
                    text=",".join(raw),
                    path=path,
                    line=reader.line_num,
                )
            row = raw if identity else [raw[i] for i in order]
            if row[k] < previous:
                raise UnsortedInput(
                    f"{path} is not sorted by {key} (line {reader.line_num}: {row[k]!r} comes "
                    f"after {previous!r}); sort it first, e.g. with the header kept on top",
                    path=str(path),
                    line=reader.line_num,
                )
            previous = row[k]
            if row[c] != currency:  # files are mostly one currency: look the checks up rarely
                currency = row[c]
                try:
                    valid, valid_row = _amount_check(currency), _row_check(currency, len(picked))
                except UnknownCurrency as exc:
                    raise MalformedField(
                        exc.message, text=currency, field="currency", path=path,
                        line=reader.line_num,
                    ) from None  # fmt: skip
            # One regex call for the whole row (a million rows a side must take seconds);
            # only a row that fails it is checked field by field, which allows padding.
            if valid_row(",".join(get_amounts(row))) is None:
                for i in amounts:
                    if valid(row[i]) is None:
                        raise MalformedAmount(
                            row[i], row[c], field=columns[i], path=path, line=reader.line_num
                        )
            yield row


def ledger_row(raw: list[str]) -> LedgerRow:
    """Parse one ledger.csv row (columns in `LEDGER_COLUMNS` order)."""
    ref, pid, kind, amount, fee, cur, at = raw
    cur = cur.strip().lower()
    return LedgerRow(ref, pid, kind, to_minor(amount, cur), to_minor(fee, cur), cur, _ts(at))


def psp_row(raw: list[str]) -> PspRow:
    """Parse one psp.csv row (columns in `PSP_COLUMNS` order)."""
    txn, created, _available, cur, gross, fee, net, category, source, payout = raw
    cur = cur.strip().lower()
    return PspRow(
        source, txn, category, to_minor(gross, cur), to_minor(fee, cur), to_minor(net, cur), cur,
        _ts(created), payout,
    )  # fmt: skip


def read_ledger(path: Path) -> Iterator[LedgerRow]:
    return map(ledger_row, _rows(path, LEDGER_COLUMNS, "reference"))


def read_psp(path: Path) -> Iterator[PspRow]:
    return map(psp_row, _rows(path, PSP_COLUMNS, "source_id"))


def read_bank(path: Path) -> Iterator[BankRow]:
    for _booking, value, amount, cur, cd, ref, _info in _rows(path, BANK_COLUMNS, "end_to_end_id"):
        cur = cur.strip().lower()
        sign = -1 if cd == "DBIT" else 1
        yield BankRow(ref, sign * to_minor(amount, cur), cur, _ts(value))


def write_csv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)

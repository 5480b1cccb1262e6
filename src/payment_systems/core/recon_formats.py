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
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from payment_systems.currencies import minor_units

LEDGER_COLUMNS = ["reference", "payment_id", "type", "amount", "fee", "currency", "booked_at"]
PSP_COLUMNS = [
    "balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee",
    "net", "reporting_category", "source_id", "automatic_payout_id",
]  # fmt: skip
BANK_COLUMNS = [
    "booking_date", "value_date", "amount", "currency", "credit_debit", "end_to_end_id",
    "remittance_information",
]  # fmt: skip


class UnsortedInput(ValueError):
    """A file is not sorted by its reference column."""


@cache
def _exponent(currency: str) -> int:
    return int(minor_units(currency))


def to_minor(text: str, currency: str) -> int:
    """``"-12.5"`` USD → ``-1250``, without floats and without a Money object per row.

    Examples:
        >>> to_minor("20.00", "usd"), to_minor("-0.5", "usd"), to_minor("1000", "jpy")
        (2000, -50, 1000)
    """
    exponent = _exponent(currency)
    if exponent and len(text) > exponent and text[-exponent - 1] == ".":
        return int(text[: -exponent - 1] + text[-exponent:])  # the common, exact-width case
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("+-").partition(".")
    if len(fraction) > exponent:
        raise ValueError(f"{text!r} has more decimals than {currency.upper()} allows")
    scale: int = 10**exponent
    value = int(whole or "0") * scale + int((fraction + "0" * exponent)[:exponent] or "0")
    return -value if negative else value


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


def _rows(path: Path, columns: list[str], key: str) -> Iterator[list[str]]:
    """Rows as lists in ``columns`` order; checks the header and the sort on ``key``."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = set(columns) - set(header)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {columns}")
        order = [header.index(c) for c in columns]
        k = columns.index(key)
        previous = ""
        identity = order == list(range(len(columns)))
        for raw in reader:
            row = raw if identity else [raw[i] for i in order]
            if row[k] < previous:
                raise UnsortedInput(f"{path} is not sorted by {key}; sort it first")
            previous = row[k]
            yield row


def ledger_row(raw: list[str]) -> LedgerRow:
    """Parse one ledger.csv row (columns in `LEDGER_COLUMNS` order)."""
    ref, pid, kind, amount, fee, cur, at = raw
    cur = cur.lower()
    return LedgerRow(ref, pid, kind, to_minor(amount, cur), to_minor(fee, cur), cur, _ts(at))


def psp_row(raw: list[str]) -> PspRow:
    """Parse one psp.csv row (columns in `PSP_COLUMNS` order)."""
    txn, created, _available, cur, gross, fee, net, category, source, payout = raw
    cur = cur.lower()
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
        cur = cur.lower()
        sign = -1 if cd == "DBIT" else 1
        yield BankRow(ref, sign * to_minor(amount, cur), cur, _ts(value))


def write_csv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)

"""Three-way reconciliation: our ledger, the PSP's balance report, the bank statement.

Matching is by reference, in two joins:

1. **Ledger ↔ PSP, one to one**, by the PSP's object id (the charge or
   refund id our ledger recorded). Both files are sorted by it, so this is a
   streaming sorted merge: memory does not grow with the file.
2. **PSP ↔ bank, one to many**: each payout batches many balance
   transactions; the bank shows one deposit per payout, referenced by the
   payout id. Payouts are few, so they are collected in memory.

Every disagreement becomes exactly one `Break`, of one class:

| class | meaning |
|---|---|
| ``missing_in_psp`` | we booked it and the PSP has no such object (or a deposit has no payout) |
| ``missing_in_ledger`` | the PSP moved money we never booked |
| ``missing_in_bank`` | the PSP paid out; the deposit never arrived |
| ``duplicate`` | the same reference twice in one source |
| ``amount_mismatch``, ``currency_mismatch``, ``fee_mismatch`` | both have it, and disagree |
| ``timing`` | both have it, but one side is after the cut-off: expected to clear next run |

``timing`` is the only *explained* class; the CLI exits non-zero if any
other break remains. Timing breaks are carried into the next run
(``carried``), where they match.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from payment_systems.core.recon_formats import BankRow, LedgerRow, PspRow, to_major, write_csv


class BreakClass(StrEnum):
    MISSING_IN_PSP = "missing_in_psp"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_IN_BANK = "missing_in_bank"
    DUPLICATE = "duplicate"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    FEE_MISMATCH = "fee_mismatch"
    TIMING = "timing"


@dataclass(frozen=True, slots=True)
class Break:
    """One disagreement, with enough to investigate it."""

    cls: BreakClass
    reference: str
    source: str  # where the odd record is: ledger | psp | bank
    amount: int
    currency: str
    detail: str


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How much disagreement still counts as a match."""

    amount_minor: int = 0  # e.g. 1 to accept a rounding cent
    fee_minor: int = 0


@dataclass
class Report:
    """The outcome of one run."""

    cutoff: int
    matched: int = 0
    payouts_matched: int = 0
    breaks: list[Break] = field(default_factory=list)
    carried_ledger: list[LedgerRow] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Break]:
        return [b for b in self.breaks if b.cls is not BreakClass.TIMING]

    def summary(self) -> dict[str, dict[str, int]]:
        """Count and absolute amount per class (amounts summed per currency code)."""
        out: dict[str, dict[str, int]] = {}
        for cls in BreakClass:
            members = [b for b in self.breaks if b.cls is cls]
            amounts: Counter[str] = Counter()
            for b in members:
                amounts[b.currency] += abs(b.amount)
            out[cls.value] = {
                "count": len(members),
                **{f"amount_{c}": a for c, a in amounts.items()},
            }
        return out

    def write(self, json_path: Path | None = None, csv_path: Path | None = None) -> None:
        """The break list as JSON (with the summary) and/or CSV."""
        if json_path is not None:
            payload = {
                "cutoff": self.cutoff,
                "matched": self.matched,
                "payouts_matched": self.payouts_matched,
                "summary": self.summary(),
                "breaks": [{**asdict(b), "cls": b.cls.value} for b in self.breaks],
            }
            json_path.write_text(json.dumps(payload, indent=2))
        if csv_path is not None:
            rows = [
                [
                    b.cls.value,
                    b.reference,
                    b.source,
                    to_major(b.amount, b.currency),
                    b.currency,
                    b.detail,
                ]
                for b in self.breaks
            ]
            write_csv(
                csv_path, ["class", "reference", "source", "amount", "currency", "detail"], rows
            )


Row = TypeVar("Row", LedgerRow, PspRow)
Add = Callable[[Break], None]


def _groups(rows: Iterable[Row]) -> Iterator[tuple[str, list[Row]]]:
    for reference, group in itertools.groupby(rows, key=lambda r: r.reference):
        yield reference, list(group)


def reconcile(
    ledger: Iterable[LedgerRow],
    psp: Iterable[PspRow],
    bank: Iterable[BankRow],
    *,
    cutoff: int,
    tolerance: Tolerance | None = None,
    carried: Iterable[LedgerRow] = (),
) -> Report:
    """Match the three sources as of ``cutoff`` (a unix time); streams ledger and PSP."""
    tol = tolerance or Tolerance()
    report = Report(cutoff)
    payouts: dict[str, PspRow] = {}
    add = report.breaks.append
    ledger_stream = heapq.merge(
        sorted(carried, key=lambda r: r.reference), ledger, key=lambda r: r.reference
    )
    left = _groups(ledger_stream)
    right = _groups(_collect_payouts(psp, payouts))
    lref, lrows = next(left, (None, []))
    rref, rrows = next(right, (None, []))
    while lref is not None or rref is not None:
        if rref is None or (lref is not None and lref < rref):
            _ledger_only(lrows[0], cutoff, add)
            _duplicates(lrows, "ledger", add)
            lref, lrows = next(left, (None, []))
        elif lref is None or rref < lref:
            _psp_only(rrows[0], cutoff, add)
            _duplicates(rrows, "psp", add)
            rref, rrows = next(right, (None, []))
        else:
            if _compare(lrows[0], rrows[0], cutoff, tol, add, report):
                report.matched += 1
            _duplicates(lrows, "ledger", add)
            _duplicates(rrows, "psp", add)
            lref, lrows = next(left, (None, []))
            rref, rrows = next(right, (None, []))
    _match_bank(payouts, bank, cutoff, add, report)
    return report


def _collect_payouts(psp: Iterable[PspRow], payouts: dict[str, PspRow]) -> Iterator[PspRow]:
    """Pass movements through to the merge; keep payout rows aside for the bank join."""
    for row in psp:
        if row.kind == "payout":
            payouts.setdefault(row.reference, row)
        else:
            yield row


def _ledger_only(row: LedgerRow, cutoff: int, add: Add) -> None:
    if row.at <= cutoff:
        add(
            Break(
                BreakClass.MISSING_IN_PSP,
                row.reference,
                "ledger",
                row.amount,
                row.currency,
                f"booked {row.kind} for {row.payment_id}; the PSP has no {row.reference}",
            )
        )


def _psp_only(row: PspRow, cutoff: int, add: Add) -> None:
    if row.at <= cutoff:  # later ones belong to the next run
        add(
            Break(
                BreakClass.MISSING_IN_LEDGER,
                row.reference,
                "psp",
                row.gross,
                row.currency,
                f"PSP {row.kind} {row.txn_id} was never booked",
            )
        )


def _duplicates(rows: list[LedgerRow] | list[PspRow], source: str, add: Add) -> None:
    for extra in rows[1:]:
        amount = extra.amount if isinstance(extra, LedgerRow) else extra.gross
        add(
            Break(
                BreakClass.DUPLICATE,
                extra.reference,
                source,
                amount,
                extra.currency,
                f"{extra.reference} appears {len(rows)} times in the {source} file",
            )
        )


def _compare(
    lrow: LedgerRow, prow: PspRow, cutoff: int, tol: Tolerance, add: Add, report: Report
) -> bool:
    ref = lrow.reference
    if lrow.currency != prow.currency:
        add(
            Break(
                BreakClass.CURRENCY_MISMATCH,
                ref,
                "psp",
                prow.gross,
                prow.currency,
                f"ledger {lrow.currency}, PSP {prow.currency}",
            )
        )
    elif abs(lrow.amount - prow.gross) > tol.amount_minor:
        add(
            Break(
                BreakClass.AMOUNT_MISMATCH,
                ref,
                "psp",
                prow.gross - lrow.amount,
                prow.currency,
                f"ledger {to_major(lrow.amount, lrow.currency)}, "
                f"PSP {to_major(prow.gross, prow.currency)}",
            )
        )
    elif abs(lrow.fee - prow.fee) > tol.fee_minor:
        add(
            Break(
                BreakClass.FEE_MISMATCH,
                ref,
                "psp",
                prow.fee - lrow.fee,
                prow.currency,
                f"ledger fee {to_major(lrow.fee, lrow.currency)}, "
                f"PSP fee {to_major(prow.fee, prow.currency)}",
            )
        )
    elif (lrow.at <= cutoff) != (prow.at <= cutoff):
        if lrow.at > cutoff and prow.at > cutoff:
            return False
        add(
            Break(
                BreakClass.TIMING,
                ref,
                "psp" if prow.at > cutoff else "ledger",
                lrow.amount,
                lrow.currency,
                "one side is after the cut-off; expected to clear next run",
            )
        )
        if prow.at > cutoff:
            report.carried_ledger.append(lrow)
    else:
        return lrow.at <= cutoff
    return False


def _match_bank(
    payouts: dict[str, PspRow], bank: Iterable[BankRow], cutoff: int, add: Add, report: Report
) -> None:
    seen: dict[str, BankRow] = {}
    for row in bank:
        if row.reference in seen:
            add(
                Break(
                    BreakClass.DUPLICATE,
                    row.reference,
                    "bank",
                    row.amount,
                    row.currency,
                    f"deposit {row.reference} appears twice on the statement",
                )
            )
            continue
        seen[row.reference] = row
    for payout_id, payout in sorted(payouts.items()):
        expected = -payout.gross  # the payout's own balance transaction is negative
        deposit = seen.pop(payout_id, None)
        if deposit is None:
            if payout.at <= cutoff:
                add(
                    Break(
                        BreakClass.MISSING_IN_BANK,
                        payout_id,
                        "psp",
                        expected,
                        payout.currency,
                        "the PSP paid out; no deposit on the statement",
                    )
                )
        elif deposit.currency != payout.currency:
            add(
                Break(
                    BreakClass.CURRENCY_MISMATCH,
                    payout_id,
                    "bank",
                    deposit.amount,
                    deposit.currency,
                    f"payout in {payout.currency}, deposit in {deposit.currency}",
                )
            )
        elif deposit.amount != expected:
            add(
                Break(
                    BreakClass.AMOUNT_MISMATCH,
                    payout_id,
                    "bank",
                    deposit.amount - expected,
                    deposit.currency,
                    f"payout {to_major(expected, payout.currency)}, "
                    f"deposit {to_major(deposit.amount, deposit.currency)}",
                )
            )
        elif (deposit.at <= cutoff) != (payout.at <= cutoff):
            add(
                Break(
                    BreakClass.TIMING,
                    payout_id,
                    "bank",
                    expected,
                    payout.currency,
                    "deposit value date after the cut-off",
                )
            )
        else:
            report.payouts_matched += 1
    for reference, deposit in sorted(seen.items()):
        if deposit.at <= cutoff:
            add(
                Break(
                    BreakClass.MISSING_IN_PSP,
                    reference,
                    "bank",
                    deposit.amount,
                    deposit.currency,
                    "a deposit for a payout the PSP report does not contain",
                )
            )


def reconcile_files(
    ledger: Path,
    psp: Path,
    bank: Path,
    *,
    cutoff: int,
    tolerance: Tolerance | None = None,
    carried: Iterable[LedgerRow] = (),
) -> Report:
    """`reconcile` on the three CSV files, fast: a million rows a side in seconds.

    Matched pairs are almost always textually identical (same amount, fee and
    currency strings, both before the cut-off), so they are compared as
    strings and never parsed. Anything else is parsed and goes through the
    very same classification as `reconcile`, so both give the same breaks.
    """
    from payment_systems.core import recon_formats as fmt

    tol = tolerance or Tolerance()
    report = Report(cutoff)
    add = report.breaks.append
    cutoff_iso = fmt.iso(cutoff)
    payouts: dict[str, PspRow] = {}
    carried_rows = sorted(carried, key=lambda r: r.reference)
    raw_ledger = fmt._rows(ledger, fmt.LEDGER_COLUMNS, "reference")
    if carried_rows:
        raw_ledger = heapq.merge(
            ([r.reference, r.payment_id, r.kind, fmt.to_major(r.amount, r.currency),
              fmt.to_major(r.fee, r.currency), r.currency, fmt.iso(r.at)] for r in carried_rows),
            raw_ledger,
            key=lambda r: r[0],
        )  # fmt: skip
    raw_psp = fmt._rows(psp, fmt.PSP_COLUMNS, "source_id")
    to_ledger, to_psp = fmt.ledger_row, fmt.psp_row

    def psp_movements() -> Iterator[list[str]]:
        for r in raw_psp:
            if r[7] == "payout":
                payouts.setdefault(r[8], to_psp(r))
            else:
                yield r

    left, right = iter(raw_ledger), psp_movements()
    lrow, rrow = next(left, None), next(right, None)
    while lrow is not None or rrow is not None:
        lgroup, rgroup = [], []
        if rrow is None or (lrow is not None and lrow[0] < rrow[8]):
            ref = lrow[0]  # type: ignore[index]
        elif lrow is None or rrow[8] < lrow[0]:
            ref = rrow[8]
        else:
            ref = lrow[0]
        while lrow is not None and lrow[0] == ref:
            lgroup.append(lrow)
            lrow = next(left, None)
        while rrow is not None and rrow[8] == ref:
            rgroup.append(rrow)
            rrow = next(right, None)
        if lgroup and rgroup:
            a, b = lgroup[0], rgroup[0]
            # the fast path: textually identical amounts, fee and currency, both in scope
            same = (a[3], a[4], a[5].lower()) == (b[4], b[5], b[3].lower())
            in_scope = a[6] <= cutoff_iso and b[1] <= cutoff_iso
            if (same and in_scope) or _compare(to_ledger(a), to_psp(b), cutoff, tol, add, report):
                report.matched += 1
        elif lgroup:
            _ledger_only(to_ledger(lgroup[0]), cutoff, add)
        else:
            _psp_only(to_psp(rgroup[0]), cutoff, add)
        if len(lgroup) > 1:
            _duplicates([to_ledger(r) for r in lgroup], "ledger", add)
        if len(rgroup) > 1:
            _duplicates([to_psp(r) for r in rgroup], "psp", add)
    _match_bank(payouts, fmt.read_bank(bank), cutoff, add, report)
    return report

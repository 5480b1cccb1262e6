"""Reconciliation data: real traffic through the sandbox, with known breaks injected.

`sandbox_days` drives days of payments through the PSP sandbox (captures,
partial captures, refunds, T+2 availability, daily payouts) and returns the
three sources as our ledger would book them, the PSP reports them and the
bank shows them. `inject` then breaks a chosen set of records, one break
class each, and returns exactly which (class, reference) pairs a correct
reconciliation must report. `synthetic_files` writes large clean files fast,
for the benchmark.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from payment_systems.core.recon_formats import (
    BANK_COLUMNS,
    LEDGER_COLUMNS,
    PSP_COLUMNS,
    BankRow,
    LedgerRow,
    PspRow,
    day,
    iso,
    to_major,
    write_csv,
)
from payment_systems.core.recon_sources import bank_from_payouts, psp_from_api
from payment_systems.core.reconciliation import BreakClass
from payment_systems.integrations.psp_sandbox.control import advance_clock
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money

DAY = 86_400


@dataclass
class Dataset:
    """The three sources, plus the cut-off that puts everything in scope."""

    ledger: list[LedgerRow]
    psp: list[PspRow]
    bank: list[BankRow]
    cutoff: int
    expected: set[tuple[BreakClass, str]] = field(default_factory=set)

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        """ledger.csv, psp.csv and bank.csv, sorted by reference."""
        ledger, psp, bank = directory / "ledger.csv", directory / "psp.csv", directory / "bank.csv"
        write_csv(
            ledger,
            LEDGER_COLUMNS,
            [
                [
                    r.reference,
                    r.payment_id,
                    r.kind,
                    to_major(r.amount, r.currency),
                    to_major(r.fee, r.currency),
                    r.currency,
                    iso(r.at),
                ]
                for r in sorted(self.ledger, key=lambda r: r.reference)
            ],
        )
        write_csv(
            psp,
            PSP_COLUMNS,
            [
                [
                    r.txn_id,
                    iso(r.at),
                    iso(r.at + 2 * DAY),
                    r.currency,
                    to_major(r.gross, r.currency),
                    to_major(r.fee, r.currency),
                    to_major(r.net, r.currency),
                    r.kind,
                    r.reference,
                    r.payout_id,
                ]
                for r in sorted(self.psp, key=lambda r: r.reference)
            ],
        )
        write_csv(
            bank,
            BANK_COLUMNS,
            [
                [
                    day(r.at),
                    day(r.at),
                    to_major(abs(r.amount), r.currency),
                    r.currency,
                    "CRDT" if r.amount >= 0 else "DBIT",
                    r.reference,
                    "STRIPE PAYOUT",
                ]
                for r in sorted(self.bank, key=lambda r: r.reference)
            ],
        )
        return ledger, psp, bank


def sandbox_days(sandbox_url: str, days: int = 3, per_day: int = 12, seed: int = 7) -> Dataset:
    """Real traffic: ``per_day`` payments a day for ``days`` days, then payouts settle."""
    rng = random.Random(seed)
    key = "sk_test_" + uuid.uuid4().hex
    psp = PSPClient(key, sandbox_url)
    ledger: list[LedgerRow] = []
    for d in range(days):
        for i in range(per_day):
            pid = f"pay_{d}_{i}"
            amount = Money(rng.randint(500, 50_000), "USD")
            manual = rng.random() < 0.25
            intent = psp.authorize(
                merchant_id="m",
                payment_id=pid,
                amount=amount,
                payment_method="pm_card_visa",
                capture=not manual,
            )
            if manual:
                part = Money(amount.amount_minor * rng.randint(50, 100) // 100, "USD")
                intent = psp.capture(
                    merchant_id="m", payment_id=pid, intent_id=intent.id, amount=part
                )
            charge = intent.to_dict()["latest_charge"]
            txn = charge["balance_transaction"]
            ledger.append(
                LedgerRow(
                    charge["id"], pid, "charge", txn["amount"], txn["fee"], "usd", txn["created"]
                )
            )
            if rng.random() < 0.2:
                refund_amount = Money(max(1, txn["amount"] * rng.randint(10, 100) // 100), "USD")
                refund = psp.refund(
                    merchant_id="m",
                    payment_id=pid,
                    refund_id=f"r{d}_{i}",
                    intent_id=intent.id,
                    amount=refund_amount,
                )
                ledger.append(
                    LedgerRow(refund.id, pid, "refund", -refund.amount, 0, "usd", refund.created)
                )
        advance_clock(sandbox_url, key, DAY)
    advance_clock(sandbox_url, key, 3 * DAY)
    rows, bank = psp_from_api(psp), bank_from_payouts(psp)
    cutoff = max([r.at for r in rows] + [b.at for b in bank])
    return Dataset(ledger, rows, bank, cutoff)


def inject(data: Dataset, counts: dict[BreakClass, int], seed: int = 0) -> Dataset:
    """Break ``counts[cls]`` distinct records for each class; records what must be found."""
    rng = random.Random(seed)
    ledger, psp, bank = list(data.ledger), list(data.psp), list(data.bank)
    expected: set[tuple[BreakClass, str]] = set()
    movements = [r.reference for r in ledger if any(p.reference == r.reference for p in psp)]
    rng.shuffle(movements)
    payouts = [b.reference for b in bank]
    rng.shuffle(payouts)

    def take(pool: list[str]) -> str:
        if not pool:
            raise ValueError("not enough records to inject that many breaks; generate more traffic")
        return pool.pop()

    for cls, n in counts.items():
        for _ in range(n):
            if cls is BreakClass.MISSING_IN_BANK:
                ref = take(payouts)
                bank = [b for b in bank if b.reference != ref]
            elif cls is BreakClass.MISSING_IN_PSP:
                ref = take(movements)
                psp = [p for p in psp if p.reference != ref]
            elif cls is BreakClass.MISSING_IN_LEDGER:
                ref = take(movements)
                ledger = [r for r in ledger if r.reference != ref]
            elif cls is BreakClass.DUPLICATE:
                ref = take(movements)
                ledger.append(next(r for r in ledger if r.reference == ref))
            else:
                ref = take(movements)
                ledger = [_break_row(r, cls, rng) if r.reference == ref else r for r in ledger]
                if cls is BreakClass.TIMING:
                    psp = [
                        replace(p, at=data.cutoff + 3600) if p.reference == ref else p for p in psp
                    ]
            expected.add((cls, ref))
    return Dataset(ledger, psp, bank, data.cutoff, expected)


def _break_row(row: LedgerRow, cls: BreakClass, rng: random.Random) -> LedgerRow:
    if cls is BreakClass.AMOUNT_MISMATCH:
        return replace(row, amount=row.amount + rng.randint(1, 500))
    if cls is BreakClass.CURRENCY_MISMATCH:
        return replace(row, currency="eur")
    if cls is BreakClass.FEE_MISMATCH:
        return replace(row, fee=row.fee + rng.randint(1, 50))
    if cls is BreakClass.TIMING:
        return row  # the PSP side moves past the cut-off
    raise ValueError(f"{cls} is not a row-level break")


def synthetic_files(directory: Path, n: int, seed: int = 1, per_payout: int = 1000) -> Path:
    """Write clean ledger/psp/bank files with ``n`` movements each, streaming (for benchmarks).

    Rows go straight to disk, already sorted (``ch_…`` sorts before ``po_…``),
    so writing a million rows needs no more memory than writing ten.
    """
    import csv

    rng = random.Random(seed)
    base = 1_800_000_000
    payouts: dict[str, int] = {}
    with (
        (directory / "ledger.csv").open("w", newline="") as lf,
        (directory / "psp.csv").open("w", newline="") as pf,
    ):
        ledger, psp = csv.writer(lf), csv.writer(pf)
        ledger.writerow(LEDGER_COLUMNS)
        psp.writerow(PSP_COLUMNS)
        for i in range(n):
            amount = rng.randint(100, 100_000)
            fee = amount * 29 // 1000 + 30
            ref, payout, at = f"ch_{i:010d}", f"po_{i // per_payout:08d}", iso(base + i % DAY)
            gross, fee_text = to_major(amount, "usd"), to_major(fee, "usd")
            ledger.writerow([ref, f"pay_{i:010d}", "charge", gross, fee_text, "usd", at])
            psp.writerow(
                [f"txn_{i:010d}", at, at, "usd", gross, fee_text,
                 to_major(amount - fee, "usd"), "charge", ref, payout]
            )  # fmt: skip
            payouts[payout] = payouts.get(payout, 0) + amount - fee
        for payout, total in sorted(payouts.items()):
            out = to_major(-total, "usd")
            psp.writerow(
                [
                    f"txn_{payout}",
                    iso(base),
                    iso(base),
                    "usd",
                    out,
                    "0.00",
                    out,
                    "payout",
                    payout,
                    payout,
                ]
            )
    bank_rows = [
        [day(base), day(base), to_major(t, "usd"), "usd", "CRDT", p, "STRIPE PAYOUT"]
        for p, t in sorted(payouts.items())
    ]
    write_csv(directory / "bank.csv", BANK_COLUMNS, bank_rows)
    return directory


def counts_for(classes: Sequence[BreakClass], each: int) -> dict[BreakClass, int]:
    return dict.fromkeys(classes, each)

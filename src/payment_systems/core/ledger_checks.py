"""Checks that read the books and compare them with the payments they account for.

Reconciliation against the PSP proves our books match the PSP's report. These
checks prove the books are right *internally*, which the PSP cannot see:

* **Every journal balances** (debits = credits per currency, two legs at least).
* **No open hold on a finished payment.** A payment that was captured, failed
  or canceled has no authorization left; a hold still open is money we think
  is on its way and never will be (the bug an unknown capture used to cause).
* **Each merchant's balance equals its payments' net**: for every merchant
  and currency, what ``merchant_payable`` says we owe equals
  Σ (amount_captured - amount_refunded - fee) over its payments. Disputes do
  not enter this sum: in this model the platform bears disputed funds, their
  fees and losses on its own accounts (``disputed_funds``, ``dispute_fees``,
  ``dispute_losses``), so the dispute adjustment to a merchant's balance is 0.

* **No payment left unsettled.** A payment still ``unknown`` or
  ``processing`` an hour after its last change is one the janitor could not
  settle: its money is in limbo, and someone must look.

The model checker runs these after every step, and the chaos audit after
every scenario. `payment-systems ledger check` prints them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from payment_systems.database.ledger_store import merchant_balances
from payment_systems.database.models import LedgerEntry, LedgerJournal, Payment

FINISHED = ("succeeded", "partially_refunded", "refunded", "failed", "canceled")
UNSETTLED_AFTER_S = 3600  # far past the janitor's 60 s wait and the PSP's 25 s deadline


@dataclass(frozen=True, slots=True)
class BalanceBreak:
    """A merchant whose ledger balance is not its payments' net."""

    merchant_id: str
    currency: str
    ledger: int
    payments_net: int


@dataclass(frozen=True, slots=True)
class BooksReport:
    """The result of every check; ``clean`` only if all lists are empty."""

    unbalanced_journals: list[str] = field(default_factory=list)
    open_holds_on_finished_payments: list[str] = field(default_factory=list)
    balance_breaks: list[BalanceBreak] = field(default_factory=list)
    unsettled_payments: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.unbalanced_journals
            or self.open_holds_on_finished_payments
            or self.balance_breaks
            or self.unsettled_payments
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def unbalanced_journals(session: Session) -> list[str]:
    """Journals whose legs do not sum to zero in some currency, or have fewer than two."""
    sign = sa.case((LedgerEntry.direction == "debit", 1), else_=-1)
    off = session.scalars(
        sa.select(LedgerEntry.journal_id)
        .group_by(LedgerEntry.journal_id, LedgerEntry.currency)
        .having(sa.func.sum(sign * LedgerEntry.amount_minor) != 0)
    ).all()
    legless = session.scalars(
        sa.select(LedgerJournal.id)
        .outerjoin(LedgerEntry, LedgerEntry.journal_id == LedgerJournal.id)
        .group_by(LedgerJournal.id)
        .having(sa.func.count(LedgerEntry.id) < 2)
    ).all()
    return sorted({*map(str, off), *map(str, legless)})


def open_holds_on_finished_payments(session: Session) -> list[str]:
    """Payments that are finished yet still have an unresolved authorization hold."""
    resolution = sa.orm.aliased(LedgerJournal)
    rows = session.scalars(
        sa.select(LedgerJournal.payment_id)
        .join(Payment, Payment.id == LedgerJournal.payment_id)
        .outerjoin(resolution, resolution.resolves == LedgerJournal.id)
        .where(
            LedgerJournal.kind == "pending",
            resolution.id.is_(None),
            Payment.status.in_(FINISHED),
        )
    ).all()
    return sorted(str(r) for r in rows)


def balance_breaks(session: Session, now: int) -> list[BalanceBreak]:
    """Merchants (per currency) whose ``merchant_payable`` differs from their payments' net."""
    net: dict[tuple[str, str], int] = defaultdict(int)
    rows = session.execute(
        sa.select(
            Payment.merchant_id,
            Payment.currency,
            sa.func.sum(Payment.amount_captured - Payment.amount_refunded - Payment.fee_minor),
        ).group_by(Payment.merchant_id, Payment.currency)
    ).all()
    for merchant_id, currency, total in rows:
        net[(str(merchant_id), str(currency))] += int(total or 0)
    books = {(b.merchant_id, b.currency): b.total for b in merchant_balances(session, now)}
    breaks = []
    for key in sorted(set(net) | set(books)):
        ledger, expected = books.get(key, 0), net.get(key, 0)
        if ledger != expected:
            breaks.append(BalanceBreak(key[0], key[1], ledger, expected))
    return breaks


def unsettled_payments(session: Session, now: int, after_s: int = UNSETTLED_AFTER_S) -> list[str]:
    """Payments still ``unknown`` or ``processing`` ``after_s`` seconds after their last change."""
    cutoff = datetime.fromtimestamp(now - after_s, UTC).replace(tzinfo=None)
    rows = session.scalars(
        sa.select(Payment.id).where(
            Payment.status.in_(("unknown", "processing")), Payment.updated_at <= cutoff
        )
    ).all()
    return sorted(str(r) for r in rows)


def check_books(session: Session, now: int) -> BooksReport:
    """All the checks, in one read-only pass."""
    return BooksReport(
        unbalanced_journals(session),
        open_holds_on_finished_payments(session),
        balance_breaks(session, now),
        unsettled_payments(session, now),
    )

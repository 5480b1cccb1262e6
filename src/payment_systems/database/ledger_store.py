"""The ledger's journals in SQL: `payment_systems.core.ledger.JournalStore` over a session.

Writes go through the caller's session, so a payment's ledger postings commit
in the same transaction as its state change and its events. Accounts are
created on first use, one per (code, currency, owner): a merchant-owned code
(``merchant_payable``) gets one account per merchant.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from payment_systems.core.ledger import CHART, Direction, Journal, JournalKind, JournalMeta, Leg
from payment_systems.database.models import LedgerAccount, LedgerEntry, LedgerJournal
from payment_systems.money import Money

# Committed account ids per engine: accounts are never deleted or renumbered, so a
# process can remember them and skip one query per ledger leg on the hot path.
_COMMITTED: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str, str], int]] = (
    weakref.WeakKeyDictionary()
)


class SqlJournalStore:
    """Journals and entries in ``ledger_journals`` / ``ledger_entries``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._accounts: dict[tuple[str, str, str], int] = {}
        bind = session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        self._committed = _COMMITTED.setdefault(engine, {})

    def _account_id(self, code: str, currency: str, owner: str) -> int:
        key = (code, currency, owner)
        cached = self._accounts.get(key) or self._committed.get(key)
        if cached is not None:
            return cached
        account = self.session.scalar(
            sa.select(LedgerAccount).where(
                LedgerAccount.code == code,
                LedgerAccount.currency == currency,
                LedgerAccount.merchant_id == owner,
            )
        )
        if account is None:
            account = LedgerAccount(
                code=code, currency=currency, merchant_id=owner, kind=CHART[code].value
            )
            self.session.add(account)
            self.session.flush()
        self._accounts[key] = account.id
        # Remember it process-wide only once this transaction commits: a rolled-back
        # account id must never be reused.
        committed, found = self._committed, dict(self._accounts)
        event.listen(self.session, "after_commit", lambda _s: committed.update(found), once=True)
        return account.id

    def append(self, journal: Journal) -> None:
        meta = journal.meta or JournalMeta()
        self.session.add(
            LedgerJournal(
                id=journal.id,
                kind=journal.kind.value,
                resolves=journal.resolves,
                payment_id=journal.payment_id,
                description=journal.description,
                category=meta.category,
                psp_object=meta.psp_object,
                effective_at=meta.effective_at,
                available_on=meta.available_on,
            )
        )
        self.session.flush()  # the unique `resolves` is checked here, before the legs
        for leg in journal.legs:
            self.session.add(
                LedgerEntry(
                    journal_id=journal.id,
                    account_id=self._account_id(
                        leg.account, leg.amount.currency, leg.merchant or ""
                    ),
                    direction=leg.direction.value,
                    amount_minor=leg.amount.amount_minor,
                    currency=leg.amount.currency,
                )
            )
        self.session.flush()

    def _load(self, row: LedgerJournal) -> Journal:
        entries = self.session.execute(
            sa.select(LedgerEntry, LedgerAccount.code, LedgerAccount.merchant_id)
            .join(LedgerAccount, LedgerEntry.account_id == LedgerAccount.id)
            .where(LedgerEntry.journal_id == row.id)
            .order_by(LedgerEntry.id)
        ).all()
        legs = tuple(
            Leg(
                code,
                Direction(entry.direction),
                Money(entry.amount_minor, entry.currency),
                owner or None,
            )
            for entry, code, owner in entries
        )
        meta = JournalMeta(row.category, row.psp_object, row.effective_at, row.available_on)
        return Journal(
            row.id, JournalKind(row.kind), legs, row.description, row.payment_id, row.resolves,
            meta,
        )  # fmt: skip

    def get(self, journal_id: str) -> Journal | None:
        row = self.session.get(LedgerJournal, journal_id)
        return None if row is None else self._load(row)

    def resolution_of(self, hold_id: str) -> Journal | None:
        row = self.session.scalar(sa.select(LedgerJournal).where(LedgerJournal.resolves == hold_id))
        return None if row is None else self._load(row)

    def __iter__(self) -> Iterator[Journal]:
        rows = self.session.scalars(sa.select(LedgerJournal).order_by(LedgerJournal.created_at))
        return iter([self._load(row) for row in rows])


def account_balances(session: Session) -> dict[tuple[str, str], int]:
    """Posted debits minus credits per (account, currency), over every owner, in one query."""
    sign = sa.case((LedgerEntry.direction == "debit", 1), else_=-1)
    rows = session.execute(
        sa.select(
            LedgerAccount.code, LedgerEntry.currency, sa.func.sum(sign * LedgerEntry.amount_minor)
        )
        .join(LedgerAccount, LedgerEntry.account_id == LedgerAccount.id)
        .join(LedgerJournal, LedgerEntry.journal_id == LedgerJournal.id)
        .where(LedgerJournal.kind.in_(["posted", "post"]))
        .group_by(LedgerAccount.code, LedgerEntry.currency)
    ).all()
    return {(code, currency): int(total) for code, currency, total in rows}


@dataclass(frozen=True, slots=True)
class MerchantBalance:
    """What we owe one merchant in one currency, as the merchant sees it (minor units).

    ``pending`` is captured money the PSP has not made available yet (its
    balance transaction's ``available_on`` is in the future); ``available``
    is the rest, and can go negative (a refund is taken from it at once), as
    on Stripe. Their sum is the merchant's whole balance.
    """

    merchant_id: str
    currency: str
    available: int
    pending: int

    @property
    def total(self) -> int:
        return self.available + self.pending


def merchant_balances(
    session: Session, now: int, merchant_id: str | None = None
) -> list[MerchantBalance]:
    """Each merchant's balance per currency, summed from its ``merchant_payable`` entries.

    A liability's balance is credits minus debits (its *normal* side is the
    credit), so what we owe the merchant is positive here. Only final
    journals count: an open authorization hold is not money the merchant has.
    """
    owed = sa.case((LedgerEntry.direction == "credit", 1), else_=-1) * LedgerEntry.amount_minor
    later = sa.and_(LedgerJournal.available_on.is_not(None), LedgerJournal.available_on > now)
    query = (
        sa.select(
            LedgerAccount.merchant_id,
            LedgerEntry.currency,
            sa.func.sum(sa.case((later, 0), else_=owed)),
            sa.func.sum(sa.case((later, owed), else_=0)),
        )
        .join(LedgerAccount, LedgerEntry.account_id == LedgerAccount.id)
        .join(LedgerJournal, LedgerEntry.journal_id == LedgerJournal.id)
        .where(
            LedgerAccount.code == "merchant_payable",
            LedgerJournal.kind.in_(["posted", "post"]),
        )
        .group_by(LedgerAccount.merchant_id, LedgerEntry.currency)
        .order_by(LedgerAccount.merchant_id, LedgerEntry.currency)
    )
    if merchant_id is not None:
        query = query.where(LedgerAccount.merchant_id == merchant_id)
    return [
        MerchantBalance(str(m), str(cur), int(available or 0), int(pending or 0))
        for m, cur, available, pending in session.execute(query).all()
    ]

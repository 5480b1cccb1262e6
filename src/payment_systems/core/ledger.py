"""Double-entry ledger with TigerBeetle-style invariants. Pure domain: no database here.

The invariants, each enforced here and tested with hypothesis over random
operation sequences (``tests/test_ledger.py``):

1. **Every journal balances**: its debits equal its credits, per currency.
2. **Entries are immutable**: a mistake is corrected by a new, reversing
   journal, so the history of every balance can be replayed.
3. **Authorizations are pending holds**, later *posted* (captured, fully or
   partly) or *voided* (released), as TigerBeetle's two-phase transfers are.
4. **A hold resolves at most once**: a second capture or a void after a
   capture is refused (and the SQL store's unique ``resolves`` column refuses
   it again at the database).
5. **Balances are derived** from entries, never stored, so they cannot drift
   from the history that explains them.
6. **Merchant money has an owner**: a leg on a merchant-owned account
   (`MERCHANT_OWNED`) names its merchant, and each merchant's balance is
   read from its own account alone.

Sign convention: a balance is debits minus credits. Assets and expenses have
*normal debit* balances (positive); liabilities and revenue have *normal
credit* balances (negative here). So ``merchant_payable`` is negative when we
owe the merchant money, and a merchant's balance as the merchant sees it is
its negation (`merchant_view`).

In production, use TigerBeetle, or a ledger service such as Formance or
Modern Treasury's; the point here is to see the invariants work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from payment_systems.errors import PaymentSystemsError
from payment_systems.money import Money


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class JournalKind(StrEnum):
    POSTED = "posted"  # an ordinary, final journal
    PENDING = "pending"  # a hold: counts only toward pending balances
    POST = "post"  # resolves a hold by posting (all or part of) it
    VOID = "void"  # resolves a hold by releasing it


class AccountKind(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"


# The chart of accounts a card-payments platform needs first.
CHART: dict[str, AccountKind] = {
    "psp_receivable": AccountKind.ASSET,  # funds the PSP holds for us
    "bank": AccountKind.ASSET,  # our bank account (payouts land here)
    "fx_clearing": AccountKind.ASSET,  # where one currency becomes another
    "merchant_payable": AccountKind.LIABILITY,  # what we owe merchants
    "customer_refunds_payable": AccountKind.LIABILITY,
    "fx_revenue": AccountKind.REVENUE,
    "psp_fees": AccountKind.EXPENSE,
    "disputed_funds": AccountKind.ASSET,  # withdrawn by the network until a dispute is decided
    "dispute_losses": AccountKind.EXPENSE,
    "dispute_fees": AccountKind.EXPENSE,
}


# Accounts with one row per merchant: the money in them belongs to (or is owed by) a merchant.
MERCHANT_OWNED = frozenset({"merchant_payable"})


class LedgerError(PaymentSystemsError):
    code = "ledger_error"
    http_status = 409


class UnbalancedJournal(LedgerError):
    code = "unbalanced_journal"


class HoldAlreadyResolved(LedgerError):
    code = "hold_already_resolved"


class UnknownHold(LedgerError):
    code = "unknown_hold"


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a journal: debit or credit ``amount`` on ``account``.

    ``merchant`` names the owner of a merchant-owned account; platform
    accounts have none.
    """

    account: str
    direction: Direction
    amount: Money
    merchant: str | None = None

    def __post_init__(self) -> None:
        if self.amount.amount_minor <= 0:
            raise UnbalancedJournal(f"a leg must move a positive amount, got {self.amount}")
        if self.account not in CHART:
            raise LedgerError(f"unknown ledger account {self.account!r}; add it to CHART first")
        if self.merchant and self.account not in MERCHANT_OWNED:
            raise LedgerError(
                f"{self.account} is a platform account; only {sorted(MERCHANT_OWNED)} "
                "have a merchant owner"
            )


@dataclass(frozen=True, slots=True)
class JournalMeta:
    """What a journal books, for reconciliation and balances (all optional).

    ``psp_object`` is the PSP's id for the money movement (``ch_…``, ``re_…``),
    ``effective_at`` the PSP's timestamp for it, and ``available_on`` when the
    funds become available to the merchant (None: at once).
    """

    category: str | None = None
    psp_object: str | None = None
    effective_at: int | None = None
    available_on: int | None = None


@dataclass(frozen=True, slots=True)
class Journal:
    """A balanced set of legs, written at once and never changed."""

    id: str
    kind: JournalKind
    legs: tuple[Leg, ...]
    description: str
    payment_id: str | None = None
    resolves: str | None = None  # the hold a POST or VOID resolves
    meta: JournalMeta | None = None


def transfer(
    debit: str, credit: str, amount: Money, *, merchant: str | None = None
) -> tuple[Leg, Leg]:
    """The common two-leg journal: move ``amount`` from ``credit`` to ``debit``.

    ``merchant`` owns whichever side is a merchant-owned account.
    """
    return (
        Leg(debit, Direction.DEBIT, amount, merchant if debit in MERCHANT_OWNED else None),
        Leg(credit, Direction.CREDIT, amount, merchant if credit in MERCHANT_OWNED else None),
    )


def check_balanced(legs: Sequence[Leg]) -> None:
    """Invariant 1: debits equal credits in every currency."""
    if not legs:
        raise UnbalancedJournal("a journal needs at least two legs")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        sign = 1 if leg.direction is Direction.DEBIT else -1
        totals[leg.amount.currency] += sign * leg.amount.amount_minor
    off = {cur: total for cur, total in totals.items() if total}
    if off:
        raise UnbalancedJournal(f"journal does not balance; debits minus credits = {off}")


class JournalStore(Protocol):
    """Where journals live: in memory for tests, in SQL for the service."""

    def append(self, journal: Journal) -> None: ...

    def get(self, journal_id: str) -> Journal | None: ...

    def resolution_of(self, hold_id: str) -> Journal | None: ...

    def __iter__(self) -> Iterator[Journal]: ...


class MemoryJournalStore:
    """A list of journals with an index of resolutions."""

    def __init__(self) -> None:
        self._journals: dict[str, Journal] = {}
        self._resolutions: dict[str, Journal] = {}

    def append(self, journal: Journal) -> None:
        if journal.id in self._journals:
            raise LedgerError(f"journal {journal.id} already exists; journals are immutable")
        if journal.resolves is not None:
            if journal.resolves in self._resolutions:
                raise HoldAlreadyResolved(f"hold {journal.resolves} is already resolved")
            self._resolutions[journal.resolves] = journal
        self._journals[journal.id] = journal

    def get(self, journal_id: str) -> Journal | None:
        return self._journals.get(journal_id)

    def resolution_of(self, hold_id: str) -> Journal | None:
        return self._resolutions.get(hold_id)

    def __iter__(self) -> Iterator[Journal]:
        return iter(list(self._journals.values()))


class Ledger:
    """Write journals through the invariants; read balances derived from them."""

    def __init__(self, store: JournalStore | None = None) -> None:
        self.store: JournalStore = store or MemoryJournalStore()

    def post(
        self, journal_id: str, legs: Iterable[Leg], description: str,
        payment_id: str | None = None, meta: JournalMeta | None = None,
    ) -> Journal:  # fmt: skip
        """Write a final journal."""
        journal = Journal(
            journal_id, JournalKind.POSTED, tuple(legs), description, payment_id, None, meta
        )
        return self._write(journal)

    def hold(
        self, journal_id: str, debit: str, credit: str, amount: Money, description: str,
        payment_id: str | None = None, *, merchant: str | None = None,
    ) -> Journal:  # fmt: skip
        """Open a pending hold (an authorization): two legs, resolved later."""
        legs = transfer(debit, credit, amount, merchant=merchant)
        meta = JournalMeta(category="authorization")
        return self._write(
            Journal(journal_id, JournalKind.PENDING, legs, description, payment_id, None, meta)
        )

    def is_open(self, hold_id: str) -> bool:
        """True if ``hold_id`` is a pending hold not yet posted or voided."""
        hold = self.store.get(hold_id)
        return (
            hold is not None
            and hold.kind is JournalKind.PENDING
            and self.store.resolution_of(hold_id) is None
        )

    def post_hold(
        self, journal_id: str, hold_id: str, amount: Money | None = None,
        meta: JournalMeta | None = None,
    ) -> Journal:  # fmt: skip
        """Capture: post all of a hold, or ``amount`` of it (the rest is released)."""
        hold = self._open_hold(hold_id)
        debit, credit = hold.legs
        full = debit.amount
        amount = full if amount is None else amount
        if amount.currency != full.currency or not 0 < amount.amount_minor <= full.amount_minor:
            raise LedgerError(f"can post between 0 and {full} of hold {hold_id}, not {amount}")
        legs = (
            Leg(debit.account, Direction.DEBIT, amount, debit.merchant),
            Leg(credit.account, Direction.CREDIT, amount, credit.merchant),
        )
        return self._write(
            Journal(
                journal_id,
                JournalKind.POST,
                legs,
                f"capture of {hold_id}",
                hold.payment_id,
                hold_id,
                meta,
            )
        )

    def void_hold(self, journal_id: str, hold_id: str) -> Journal:
        """Release a hold without posting anything (an authorization reversal)."""
        hold = self._open_hold(hold_id)
        return self._write(
            Journal(
                journal_id,
                JournalKind.VOID,
                hold.legs,
                f"void of {hold_id}",
                hold.payment_id,
                hold_id,
                JournalMeta(category="void"),
            )
        )

    def reverse(self, journal_id: str, original_id: str, description: str) -> Journal:
        """Correct a posted journal with its mirror image (entries are never edited)."""
        original = self.store.get(original_id)
        if original is None or original.kind not in (JournalKind.POSTED, JournalKind.POST):
            raise LedgerError(f"{original_id} is not a posted journal")
        flipped = tuple(
            Leg(
                leg.account,
                Direction.CREDIT if leg.direction is Direction.DEBIT else Direction.DEBIT,
                leg.amount,
                leg.merchant,
            )
            for leg in original.legs
        )
        return self.post(journal_id, flipped, description, original.payment_id)

    def _open_hold(self, hold_id: str) -> Journal:
        hold = self.store.get(hold_id)
        if hold is None or hold.kind is not JournalKind.PENDING:
            raise UnknownHold(f"{hold_id} is not a pending hold")
        if self.store.resolution_of(hold_id) is not None:
            raise HoldAlreadyResolved(f"hold {hold_id} is already resolved")
        return hold

    def _write(self, journal: Journal) -> Journal:
        check_balanced(journal.legs)
        self.store.append(journal)
        return journal

    # -- derived balances ----------------------------------------------------------

    def balance(
        self, account: str, currency: str, *, pending: bool = False, merchant: str | None = None
    ) -> Money:
        """Debits minus credits on ``account``: posted, or (``pending=True``) open holds only.

        With ``merchant``, only that merchant's account (of a merchant-owned code).
        """
        total = 0
        for journal in self.store:
            if pending:
                counts = journal.kind is JournalKind.PENDING and (
                    self.store.resolution_of(journal.id) is None
                )
            else:
                counts = journal.kind in (JournalKind.POSTED, JournalKind.POST)
            if not counts:
                continue
            for leg in journal.legs:
                if leg.account != account or leg.amount.currency != currency:
                    continue
                if merchant is not None and leg.merchant != merchant:
                    continue
                sign = 1 if leg.direction is Direction.DEBIT else -1
                total += sign * leg.amount.amount_minor
        return Money(total, currency)

    def trial_balance(self) -> dict[str, int]:
        """Posted debits minus credits per currency across all accounts: always zero."""
        totals: dict[str, int] = defaultdict(int)
        for journal in self.store:
            if journal.kind in (JournalKind.POSTED, JournalKind.POST):
                for leg in journal.legs:
                    sign = 1 if leg.direction is Direction.DEBIT else -1
                    totals[leg.amount.currency] += sign * leg.amount.amount_minor
        return dict(totals)

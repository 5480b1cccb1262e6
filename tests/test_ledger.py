"""Ledger invariants, including hypothesis over random operation sequences."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment_systems.core.ledger import (
    Direction,
    HoldAlreadyResolved,
    Ledger,
    LedgerError,
    Leg,
    UnbalancedJournal,
    UnknownHold,
    transfer,
)
from payment_systems.money import Money

USD = "USD"


def usd(cents: int) -> Money:
    return Money(cents, USD)


def test_a_journal_whose_debits_and_credits_differ_is_refused() -> None:
    ledger = Ledger()
    legs = [
        Leg("psp_receivable", Direction.DEBIT, usd(100)),
        Leg("merchant_payable", Direction.CREDIT, usd(99)),
    ]
    with pytest.raises(UnbalancedJournal, match="does not balance"):
        ledger.post("j1", legs, "bad")


def test_balance_is_checked_per_currency_not_in_total() -> None:
    legs = [
        Leg("psp_receivable", Direction.DEBIT, usd(100)),
        Leg("merchant_payable", Direction.CREDIT, Money(100, "EUR")),
    ]
    with pytest.raises(UnbalancedJournal):
        Ledger().post("j1", legs, "mixed")


def test_a_multi_leg_capture_with_a_fee_balances() -> None:
    ledger = Ledger()
    ledger.post(
        "cap",
        [
            Leg("psp_receivable", Direction.DEBIT, usd(1912)),
            Leg("psp_fees", Direction.DEBIT, usd(88)),
            Leg("merchant_payable", Direction.CREDIT, usd(2000)),
        ],
        "capture $20 with an 88c fee",
    )
    assert ledger.balance("merchant_payable", USD) == usd(-2000)
    assert ledger.trial_balance() == {USD: 0}


def test_a_hold_counts_only_as_pending_until_posted() -> None:
    ledger = Ledger()
    ledger.hold("h1", "psp_receivable", "merchant_payable", usd(5000), "auth")
    assert ledger.balance("psp_receivable", USD) == usd(0)
    assert ledger.balance("psp_receivable", USD, pending=True) == usd(5000)
    ledger.post_hold("p1", "h1", usd(3000))  # partial capture
    assert ledger.balance("psp_receivable", USD) == usd(3000)
    assert ledger.balance("psp_receivable", USD, pending=True) == usd(0)  # the rest is released


def test_a_hold_resolves_at_most_once() -> None:
    ledger = Ledger()
    ledger.hold("h1", "psp_receivable", "merchant_payable", usd(5000), "auth")
    ledger.post_hold("p1", "h1")
    with pytest.raises(HoldAlreadyResolved):
        ledger.post_hold("p2", "h1")
    with pytest.raises(HoldAlreadyResolved):
        ledger.void_hold("v1", "h1")


def test_posting_more_than_the_hold_is_refused() -> None:
    ledger = Ledger()
    ledger.hold("h1", "psp_receivable", "merchant_payable", usd(5000), "auth")
    with pytest.raises(LedgerError, match="can post between"):
        ledger.post_hold("p1", "h1", usd(5001))


def test_voiding_an_unknown_hold_is_refused() -> None:
    with pytest.raises(UnknownHold):
        Ledger().void_hold("v1", "nope")


def test_a_correction_is_a_new_reversing_journal() -> None:
    ledger = Ledger()
    ledger.post("j1", transfer("psp_receivable", "merchant_payable", usd(700)), "oops")
    ledger.reverse("j2", "j1", "correct j1")
    assert ledger.balance("psp_receivable", USD) == usd(0)
    assert [j.id for j in ledger.store] == ["j1", "j2"]  # history kept


def test_journal_ids_cannot_be_reused() -> None:
    ledger = Ledger()
    ledger.post("j1", transfer("psp_receivable", "merchant_payable", usd(1)), "x")
    with pytest.raises(LedgerError, match="immutable"):
        ledger.post("j1", transfer("psp_receivable", "merchant_payable", usd(2)), "y")


# -- properties ---------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.integers(1, 10**9), st.sampled_from(["USD", "JPY", "KWD"])),
        st.tuples(st.just("hold"), st.integers(1, 10**9), st.sampled_from(["USD", "EUR"])),
        st.tuples(st.just("capture"), st.integers(0, 50), st.integers(1, 100)),
        st.tuples(st.just("void"), st.integers(0, 50), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(operations)
def test_any_operation_sequence_keeps_every_currency_balanced(
    ops: list[tuple[str, int, object]],
) -> None:
    ledger = Ledger()
    holds: list[tuple[str, Money]] = []
    resolved: set[str] = set()
    for n, (op, a, b) in enumerate(ops):
        try:
            if op == "post":
                ledger.post(
                    f"j{n}",
                    transfer("psp_receivable", "merchant_payable", Money(a, str(b))),
                    "post",
                )
            elif op == "hold":
                ledger.hold(f"j{n}", "psp_receivable", "merchant_payable", Money(a, str(b)), "hold")
                holds.append((f"j{n}", Money(a, str(b))))
            elif op in ("capture", "void") and holds:
                hold_id, amount = holds[a % len(holds)]
                if op == "capture":
                    part = Money(max(1, amount.amount_minor * int(b) // 100), amount.currency)
                    ledger.post_hold(f"j{n}", hold_id, part)
                else:
                    ledger.void_hold(f"j{n}", hold_id)
                assert hold_id not in resolved  # invariant 4: only the first resolution succeeds
                resolved.add(hold_id)
        except HoldAlreadyResolved:
            assert holds[a % len(holds)][0] in resolved
    assert all(total == 0 for total in ledger.trial_balance().values())
    for currency in ("USD", "EUR", "JPY", "KWD"):
        assert ledger.balance("psp_receivable", currency) == -ledger.balance(
            "merchant_payable", currency
        )
        open_holds = sum(
            m.amount_minor for h, m in holds if h not in resolved and m.currency == currency
        )
        assert ledger.balance("psp_receivable", currency, pending=True).amount_minor == open_holds


def test_an_account_created_in_a_rolled_back_transaction_is_never_reused(any_engine: Any) -> None:
    import sqlalchemy as sa

    from payment_systems.core.ledger import Ledger, transfer
    from payment_systems.database.ledger_store import SqlJournalStore, account_balances
    from payment_systems.database.migrate import upgrade
    from payment_systems.database.models import LedgerAccount
    from payment_systems.database.session import session_factory

    upgrade(any_engine)
    sessions = session_factory(any_engine)
    legs = transfer("dispute_fees", "psp_receivable", Money(1_500, "USD"))
    with sessions() as session:
        Ledger(SqlJournalStore(session)).post("j1", legs, "rolled back")
        session.rollback()  # the accounts created above never existed
    with sessions.begin() as session:
        Ledger(SqlJournalStore(session)).post("j2", legs, "committed")
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LedgerAccount)) == 2
        assert account_balances(session)[("dispute_fees", "USD")] == 1_500

"""Migrations create the models' schema on SQLite and Postgres; the indexes are used."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from payment_systems.database.explain import explain_idempotency_lookup
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import (
    Base,
    ImmutableEntryError,
    LedgerAccount,
    LedgerEntry,
    LedgerJournal,
    Merchant,
    Payment,
    PaymentEvent,
)


def test_migrations_create_exactly_the_models_schema(any_engine: Engine) -> None:
    upgrade(any_engine)
    with any_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(sqlite_engine: Engine) -> None:
    upgrade(sqlite_engine)
    upgrade(sqlite_engine)  # already at head: nothing to do, no error


def _merchant_and_payment(session: Session) -> Payment:
    session.add(Merchant(id="m_1", name="Shop", api_key_hash="h" * 64, api_key_prefix="sk_test_ab"))
    payment = Payment(
        id="pay_1", merchant_id="m_1", idempotency_key="k", amount_minor=100, currency="USD",
        status="processing", capture_method="automatic", payment_method="pm_card_visa",
    )  # fmt: skip
    session.add(payment)
    session.flush()
    return payment


def test_two_payments_with_one_merchants_key_are_refused(any_engine: Engine) -> None:
    upgrade(any_engine)
    with Session(any_engine) as session:
        _merchant_and_payment(session)
        session.add(
            Payment(
                id="pay_2",
                merchant_id="m_1",
                idempotency_key="k",
                amount_minor=100,
                currency="USD",
                status="processing",
                capture_method="automatic",
                payment_method="pm_card_visa",
            )
        )
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()


def test_an_event_version_cannot_be_written_twice(any_engine: Engine) -> None:
    upgrade(any_engine)
    with Session(any_engine) as session:
        _merchant_and_payment(session)
        session.add(PaymentEvent(payment_id="pay_1", version=1, type="PaymentCreated", actor="api"))
        session.add(
            PaymentEvent(payment_id="pay_1", version=1, type="PaymentCaptured", actor="api")
        )
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()


def test_ledger_entries_cannot_be_edited(sqlite_engine: Engine) -> None:
    upgrade(sqlite_engine)
    with Session(sqlite_engine) as session:
        account = LedgerAccount(code="psp_receivable", currency="USD", kind="asset")
        session.add(account)
        session.add(LedgerJournal(id="j1", kind="posted", description="x"))
        session.flush()
        entry = LedgerEntry(
            journal_id="j1",
            account_id=account.id,
            direction="debit",
            amount_minor=5,
            currency="USD",
        )
        session.add(entry)
        session.flush()
        entry.amount_minor = 6
        with pytest.raises(ImmutableEntryError, match="immutable"):
            session.flush()


def test_a_hold_can_be_resolved_only_once_even_at_the_database(any_engine: Engine) -> None:
    upgrade(any_engine)
    with Session(any_engine) as session:
        session.add(LedgerJournal(id="hold", kind="pending", description="auth"))
        session.add(LedgerJournal(id="post", kind="post", resolves="hold", description="capture"))
        session.flush()
        session.add(LedgerJournal(id="void", kind="void", resolves="hold", description="void"))
        with pytest.raises(sa.exc.IntegrityError):
            session.flush()


def test_the_idempotency_lookup_uses_the_unique_index(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    plan = "\n".join(explain_idempotency_lookup(pg_engine))
    assert "uq_idempotency_keys_merchant_id_key" in plan
    assert "Seq Scan" not in plan

"""SQLAlchemy 2.0 models: merchants, payments, their event store, the ledger, idempotency keys.

How the models support idempotency:

* ``payments`` has a unique ``(merchant_id, idempotency_key)``: a retry that
  arrives after our lock expired finds the *same* payment row, so it derives
  the same PSP idempotency key and the PSP replays instead of charging again.
* ``idempotency_keys`` (the SQL backend, shaped like Brandur Leach's
  rocket-rides-atomic) has a unique ``(merchant_id, key)``: the lookup on
  every request is one index probe, and the uniqueness is the lock of last
  resort when two requests race to insert.
* ``payment_events`` is append-only with a unique ``(payment_id, version)``:
  two writers cannot both append version 3 (optimistic concurrency), and the
  events are the audit trail: who changed what, when, in order.
* ``ledger_entries`` are immutable (an ORM guard refuses updates and
  deletes); a correction is a new journal, never an edit.

Amounts are ``BIGINT`` minor units with a ``CHAR(3)`` currency: never a float.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: sa.JSON}  # noqa: RUF012 - SQLAlchemy reads it


BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER only


def _now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC).replace(tzinfo=None)


class Merchant(Base):
    """A merchant and its API key, stored only as a SHA-256 hash plus a visible prefix."""

    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    api_key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Payment(Base):
    """The current state of a payment: a projection of its events, kept for fast reads."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("merchant_id", "idempotency_key"),
        sa.CheckConstraint("amount_minor > 0", name="positive_amount"),
        sa.Index("ix_payments_status_updated", "status", "updated_at"),
        # every webhook and every dispute sync finds its payment by the PSP's intent id
        sa.Index("ix_payments_psp_intent_id", "psp_intent_id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(sa.ForeignKey("merchants.id"))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(32))
    capture_method: Mapped[str] = mapped_column(sa.String(16))
    payment_method: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    amount_captured: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    psp_intent_id: Mapped[str | None] = mapped_column(sa.String(64))
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    # What the merchant pays on this payment (the PSP's fee, passed through).
    fee_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # The request's fingerprint: a key reused with another body after the Redis record
    # expired is refused here too (422), instead of replaying the old payment.
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    events: Mapped[list[PaymentEvent]] = relationship(
        back_populates="payment", order_by="PaymentEvent.version"
    )


class PaymentEvent(Base):
    """One past-tense fact about a payment; append-only, versioned per payment."""

    __tablename__ = "payment_events"
    __table_args__ = (sa.UniqueConstraint("payment_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id"))
    version: Mapped[int]
    type: Mapped[str] = mapped_column(sa.String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)

    payment: Mapped[Payment] = relationship(back_populates="events")


class LedgerAccount(Base):
    """A ledger account, one per (code, currency, owner): balances never mix currencies.

    Merchant-owned accounts (``merchant_payable``) have one row per merchant, so
    "what do we owe merchant X?" is a sum over X's account alone, and a merchant's
    journals touch only its own rows. Platform accounts have ``merchant_id = ''``
    (not NULL: SQL treats NULLs as distinct, which would let the unique
    constraint admit two platform accounts for the same code).
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        sa.UniqueConstraint("code", "currency", "merchant_id", name="uq_ledger_accounts_owner"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(64))
    currency: Mapped[str] = mapped_column(sa.String(3))
    merchant_id: Mapped[str] = mapped_column(sa.String(40), default="", server_default="")
    kind: Mapped[str] = mapped_column(sa.String(16))  # asset | liability | revenue | expense


class LedgerJournal(Base):
    """One balanced journal transaction. ``resolves`` is unique: a hold resolves at most once.

    A post or void of a pending hold names the hold in ``resolves``; the unique
    constraint makes the database itself refuse a second resolution, even
    from two racing processes.
    """

    __tablename__ = "ledger_journals"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # posted | pending | post | void
    resolves: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    payment_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    description: Mapped[str] = mapped_column(sa.String(200))
    # capture | fee | refund | authorization | void | dispute | ...: what reconciliation reads
    category: Mapped[str | None] = mapped_column(sa.String(32))
    # The PSP object this journal books (ch_…, re_…) and the PSP's timestamp for it:
    # reconciliation matches the books to the PSP's report by these.
    psp_object: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    effective_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    # When the funds become available to the merchant (epoch s; NULL: at once).
    available_on: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class LedgerEntry(Base):
    """One leg of a journal: immutable once written (see the guard below)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.CheckConstraint("amount_minor > 0", name="positive_amount"),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name="direction"),
        sa.Index("ix_ledger_entries_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    journal_id: Mapped[str] = mapped_column(sa.ForeignKey("ledger_journals.id"), index=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_accounts.id"))
    direction: Mapped[str] = mapped_column(sa.String(6))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))


class Refund(Base):
    """One refund of a payment, ours or the PSP's: the record that makes it happen once.

    The row is written *before* the PSP call (``pending``), so a crash or a
    timeout leaves a trace the janitor can resolve; ``psp_refund_id`` is unique,
    so the API path and the webhook path of the same PSP refund can book it
    only once, in whichever order they arrive.
    """

    __tablename__ = "refunds"
    __table_args__ = (sa.Index("ix_refunds_status_updated", "status", "updated_at"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # re_… (ours, or the PSP's)
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id"), index=True)
    merchant_id: Mapped[str] = mapped_column(sa.String(40))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16))  # pending | unknown | succeeded | failed
    psp_refund_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    failure_code: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class IdempotencyKey(Base):
    """The SQL idempotency backend, after Brandur's ``idempotency_keys`` table.

    ``locked_at`` is set while a request holds the key; ``lock_token`` is the
    fencing token; ``recovery_point`` says how far a crashed request got, so a
    retry resumes there instead of starting over.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        sa.UniqueConstraint("merchant_id", "key"),
        sa.Index("ix_idempotency_keys_created_at", "created_at"),  # for the reaper
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(sa.String(40))
    key: Mapped[str] = mapped_column(sa.String(255))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    locked_at: Mapped[datetime | None]
    lock_token: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    recovery_point: Mapped[str] = mapped_column(sa.String(32), default="started")
    response_code: Mapped[int | None]
    response_body: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    response_content_type: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    last_run_at: Mapped[datetime] = mapped_column(default=_now)


class WebhookInbox(Base):
    """Every PSP event we accepted, once: the unique event id is the dedupe.

    Written in the same transaction as the state change the event caused, so
    "recorded as received" and "applied" can never disagree: a crash rolls
    back both, and the PSP's retry applies the event exactly once.
    """

    __tablename__ = "webhook_inbox"

    event_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    payment_id: Mapped[str | None] = mapped_column(sa.String(40), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))  # applied | stale | ignored
    event_created: Mapped[int] = mapped_column(sa.BigInteger)  # the PSP's timestamp (lag)
    received_at: Mapped[datetime] = mapped_column(default=_now)


class OutboxMessage(Base):
    """An event waiting to be published; written in the transaction that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_unpublished", "published_at", "partition", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(80), unique=True)
    aggregate_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    partition: Mapped[int] = mapped_column(sa.SmallInteger)  # crc32(aggregate_id) % 16
    type: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    published_at: Mapped[datetime | None]


class ConsumerInbox(Base):
    """Which events a consumer has already applied: at-least-once delivery, applied once."""

    __tablename__ = "consumer_inbox"

    consumer: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(default=_now)


class DisputeRecord(Base):
    """A dispute on one of our payments: a projection of its ``dispute_events``."""

    __tablename__ = "disputes"
    __table_args__ = (sa.Index("ix_disputes_merchant_created", "merchant_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # the PSP's dp_ id
    payment_id: Mapped[str] = mapped_column(sa.ForeignKey("payments.id"), index=True)
    merchant_id: Mapped[str] = mapped_column(sa.ForeignKey("merchants.id"))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    reason: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(32))
    due_by: Mapped[int] = mapped_column(sa.BigInteger)  # epoch seconds, the PSP's clock
    evidence_submitted: Mapped[bool] = mapped_column(default=False)
    funds_withdrawn: Mapped[bool] = mapped_column(default=False)
    evidence_strength: Mapped[str | None] = mapped_column(sa.String(16))  # strong | weak
    version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class DisputeEvent(Base):
    """One transition of a dispute; append-only, versioned per dispute (the audit trail)."""

    __tablename__ = "dispute_events"
    __table_args__ = (sa.UniqueConstraint("dispute_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dispute_id: Mapped[str] = mapped_column(sa.ForeignKey("disputes.id"))
    version: Mapped[int]
    type: Mapped[str] = mapped_column(sa.String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ImmutableEntryError(RuntimeError):
    """Raised when code tries to change or delete a ledger entry."""


@event.listens_for(LedgerEntry, "before_update")
@event.listens_for(LedgerEntry, "before_delete")
@event.listens_for(LedgerJournal, "before_update")
@event.listens_for(LedgerJournal, "before_delete")
def _ledger_is_immutable(_mapper: Mapper[Any], _conn: Any, target: object) -> None:
    raise ImmutableEntryError(
        f"{type(target).__name__} {getattr(target, 'id', '?')} is immutable; "
        "post a correcting journal instead"
    )

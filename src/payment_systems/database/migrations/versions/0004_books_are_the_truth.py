"""the books are the truth: per-merchant accounts, refunds, fingerprints, database guards

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:20:00

* ``ledger_accounts`` gains an owner (``merchant_id``; ``''`` for platform
  accounts), so each merchant's payable is its own account.
* ``ledger_journals`` gains what reconciliation and balances read: the
  ``category``, the PSP object it books, the PSP's timestamp and the date the
  funds become available.
* ``refunds`` records each refund before the PSP call, with a unique PSP id.
* ``payments`` gains the fee the merchant pays, the request fingerprint and
  the index on ``psp_intent_id`` every webhook uses.
* The database guards the ledger itself: UPDATE and DELETE on journals and
  entries are refused by triggers (both dialects), and on PostgreSQL a
  deferred constraint trigger refuses, at COMMIT, any journal that does not
  balance or has fewer than two legs. Raw SQL cannot go around them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PG_GUARDS = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the ledger is append-only: % on % refused; post a correcting journal',
    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_journals_append_only BEFORE UPDATE OR DELETE ON ledger_journals
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_journals_no_truncate BEFORE TRUNCATE ON ledger_journals
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION ledger_check_journal() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  jid text;
  legs integer;
  bad record;
BEGIN
  IF TG_TABLE_NAME = 'ledger_journals' THEN
    jid := NEW.id;
  ELSE
    jid := NEW.journal_id;
  END IF;
  SELECT count(*) INTO legs FROM ledger_entries WHERE journal_id = jid;
  IF legs < 2 THEN
    RAISE EXCEPTION 'journal % has % leg(s); a journal needs at least two', jid, legs
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT currency,
         sum(CASE direction WHEN 'debit' THEN amount_minor ELSE -amount_minor END) AS off
    INTO bad
    FROM ledger_entries WHERE journal_id = jid
    GROUP BY currency
    HAVING sum(CASE direction WHEN 'debit' THEN amount_minor ELSE -amount_minor END) <> 0
    LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal % does not balance in %: debits minus credits = %',
      jid, bad.currency, bad.off USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_journal_balances AFTER INSERT ON ledger_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_journal();
CREATE CONSTRAINT TRIGGER ledger_journal_has_legs AFTER INSERT ON ledger_journals
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_journal();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS ledger_journal_has_legs ON ledger_journals;
DROP TRIGGER IF EXISTS ledger_journal_balances ON ledger_entries;
DROP FUNCTION IF EXISTS ledger_check_journal();
DROP TRIGGER IF EXISTS ledger_journals_no_truncate ON ledger_journals;
DROP TRIGGER IF EXISTS ledger_journals_append_only ON ledger_journals;
DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries;
DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries;
DROP FUNCTION IF EXISTS ledger_refuse_change();
"""

SQLITE_TABLES = ("ledger_entries", "ledger_journals")


def _sqlite_guards() -> list[str]:
    statements = []
    for table in SQLITE_TABLES:
        for op_name in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER {table}_no_{op_name.lower()} BEFORE {op_name} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {op_name} on {table} "
                "refused; post a correcting journal'); END"
            )
    return statements


CATEGORY_BY_SUFFIX = (
    ("%:capture", "capture"),
    ("%:fee", "fee"),
    ("%:auth", "authorization"),
    ("%:void", "void"),
    ("%:refund:%", "refund"),
)


def _backfill(conn: sa.Connection) -> None:
    """Bring books written before this revision up to it (a no-op on an empty database).

    1. Each merchant's entries on the shared ``merchant_payable`` move to an
       account of its own (found through the journal's payment).
    2. Journals get their category from their id (``pay_1:capture``, …), and
       the PSP object and timestamp from the payment's events, so
       reconciliation can read them.
    3. Every refund already booked gets its ``refunds`` row. Refunds booked
       from a webhook before this revision carry no PSP refund id; their row
       says so (``legacy``), and ``psp_sync.events_to_reach`` treats the
       oldest PSP refunds adding up to them as booked, so a later re-fetch
       does not book them a second time.
    """
    owners = conn.execute(
        sa.text(
            "SELECT DISTINCT p.merchant_id, a.currency, a.id FROM ledger_entries e"
            " JOIN ledger_accounts a ON a.id = e.account_id"
            " JOIN ledger_journals j ON j.id = e.journal_id"
            " JOIN payments p ON p.id = j.payment_id"
            " WHERE a.code = 'merchant_payable' AND a.merchant_id = ''"
        )
    ).all()
    for merchant_id, currency, old_account in owners:
        conn.execute(
            sa.text(
                "INSERT INTO ledger_accounts (code, currency, kind, merchant_id)"
                " VALUES ('merchant_payable', :c, 'liability', :m)"
            ),
            {"c": currency, "m": merchant_id},
        )
        new_account = conn.execute(
            sa.text(
                "SELECT id FROM ledger_accounts WHERE code = 'merchant_payable'"
                " AND currency = :c AND merchant_id = :m"
            ),
            {"c": currency, "m": merchant_id},
        ).scalar_one()
        conn.execute(
            sa.text(
                "UPDATE ledger_entries SET account_id = :new WHERE account_id = :old"
                " AND journal_id IN (SELECT j.id FROM ledger_journals j"
                " JOIN payments p ON p.id = j.payment_id WHERE p.merchant_id = :m)"
            ),
            {"new": new_account, "old": old_account, "m": merchant_id},
        )
    for pattern, category in CATEGORY_BY_SUFFIX:
        conn.execute(
            sa.text(
                "UPDATE ledger_journals SET category = :c WHERE id LIKE :p AND category IS NULL"
            ),
            {"c": category, "p": pattern},
        )
    events = conn.execute(
        sa.text(
            "SELECT e.payment_id, e.type, e.data, p.merchant_id, p.currency FROM payment_events e"
            " JOIN payments p ON p.id = e.payment_id"
            " WHERE e.type IN ('PaymentCaptured', 'PaymentRefunded') ORDER BY e.id"
        )
    ).all()
    for payment_id, kind, raw, merchant_id, currency in events:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        if kind == "PaymentCaptured" and data.get("psp_charge_id"):
            conn.execute(
                sa.text(
                    "UPDATE ledger_journals SET psp_object = :o, effective_at = :t"
                    " WHERE id IN (:capture, :fee)"
                ),
                {"o": data["psp_charge_id"], "t": data.get("psp_created"),
                 "capture": f"{payment_id}:capture", "fee": f"{payment_id}:fee"},
            )  # fmt: skip
        elif kind == "PaymentRefunded":
            refund_id, psp_id = str(data["refund_id"]), data.get("psp_refund_id")
            journal = f"{payment_id}:refund:{refund_id}"
            if psp_id:
                conn.execute(
                    sa.text(
                        "UPDATE ledger_journals SET psp_object = :o, effective_at = :t"
                        " WHERE id = :j"
                    ),
                    {"o": psp_id, "t": data.get("psp_created"), "j": journal},
                )
            row_id = refund_id if refund_id.startswith("re_") else journal[-64:]
            conn.execute(
                sa.text(
                    "INSERT INTO refunds (id, payment_id, merchant_id, amount_minor, currency,"
                    " status, psp_refund_id, failure_code, created_at, updated_at) VALUES"
                    " (:id, :p, :m, :a, :c, 'succeeded', :psp, :legacy, :now, :now)"
                ),
                {"id": row_id, "p": payment_id, "m": merchant_id, "a": int(data["amount"]),
                 "c": currency, "psp": psp_id, "legacy": None if psp_id else "legacy",
                 "now": datetime.now(UTC).replace(tzinfo=None)},
            )  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("merchant_id", sa.String(length=40), nullable=False, server_default="")
        )
        batch_op.drop_constraint("uq_ledger_accounts_code_currency", type_="unique")
        batch_op.create_unique_constraint(
            "uq_ledger_accounts_owner", ["code", "currency", "merchant_id"]
        )

    with op.batch_alter_table("ledger_journals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("psp_object", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("effective_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("available_on", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_ledger_journals_psp_object"), ["psp_object"], unique=False
        )

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fee_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("request_fingerprint", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_payments_psp_intent_id", ["psp_intent_id"], unique=False)

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("psp_refund_id", sa.String(length=64), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("psp_refund_id", name=op.f("uq_refunds_psp_refund_id_")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refunds_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index("ix_refunds_status_updated", ["status", "updated_at"], unique=False)

    _backfill(op.get_bind())  # before the guards: it re-points old entries once
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_GUARDS)
    elif dialect == "sqlite":
        for statement in _sqlite_guards():
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_DROP)
    elif dialect == "sqlite":
        for table in SQLITE_TABLES:
            for op_name in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op_name}")
    op.drop_table("refunds")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_psp_intent_id")
        batch_op.drop_column("request_fingerprint")
        batch_op.drop_column("fee_minor")
    with op.batch_alter_table("ledger_journals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_journals_psp_object"))
        batch_op.drop_column("available_on")
        batch_op.drop_column("effective_at")
        batch_op.drop_column("psp_object")
        batch_op.drop_column("category")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_ledger_accounts_owner", type_="unique")
        batch_op.create_unique_constraint("uq_ledger_accounts_code_currency", ["code", "currency"])
        batch_op.drop_column("merchant_id")

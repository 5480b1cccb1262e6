"""Upgrading a database that already holds payments keeps its books right (migration 0004).

Before 0004 one ``merchant_payable`` account served every merchant, journals
did not say what PSP object they booked, and refunds had no table. The
migration moves each merchant's entries to its own account, labels the
journals from the payments' events and records the refunds already booked,
so a webhook after the upgrade cannot book an old refund a second time.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from payment_systems.core.ledger_checks import check_books
from payment_systems.core.psp_sync import events_to_reach, view_of
from payment_systems.database.ledger_store import merchant_balances
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory


def _old_books(engine: Engine) -> None:
    """What 0003-era code wrote: two merchants, a capture with its fee, a refund."""
    upgrade(engine, "0003")
    now = "2026-11-30 12:00:00"
    with engine.begin() as conn:

        def run(sql: str, **params: object) -> None:
            conn.execute(sa.text(sql), params)

        for merchant in ("mer_a", "mer_b"):
            run(
                "INSERT INTO merchants (id, name, api_key_hash, api_key_prefix, created_at) "
                "VALUES (:m, :m, :m, 'sk_test_', :now)",
                m=merchant,
                now=now,
            )
        run(
            "INSERT INTO ledger_accounts (code, currency, kind) VALUES "
            "('psp_receivable', 'USD', 'asset'), ('merchant_payable', 'USD', 'liability'),"
            " ('psp_fees', 'USD', 'expense')"
        )
        ids = dict(conn.execute(sa.text("SELECT code, id FROM ledger_accounts")).all())
        receivable, payable, fees = ids["psp_receivable"], ids["merchant_payable"], ids["psp_fees"]
        payments = {"pay_a": ("mer_a", 10_000, 4_000), "pay_b": ("mer_b", 5_000, 0)}
        for pid, (merchant, captured, refunded) in payments.items():
            run(
                "INSERT INTO payments (id, merchant_id, idempotency_key, amount_minor, currency,"
                " status, capture_method, payment_method, metadata, amount_captured,"
                " amount_refunded, psp_intent_id, version, created_at, updated_at) VALUES"
                " (:pid, :m, :pid, :amount, 'USD', :status, 'automatic', 'pm_card_visa', '{}',"
                " :amount, :refunded, :intent, 3, :now, :now)",
                pid=pid,
                m=merchant,
                amount=captured,
                refunded=refunded,
                intent=f"pi_{pid}",
                status="partially_refunded" if refunded else "succeeded",
                now=now,
            )
            events = [
                ("PaymentCreated", {"amount": captured, "currency": "USD"}),
                (
                    "PaymentCaptured",
                    {
                        "amount": captured,
                        "fee": 300,
                        "psp_charge_id": f"ch_{pid}",
                        "psp_created": 1,
                    },
                ),
            ]
            journals = [
                (
                    f"{pid}:capture",
                    [(receivable, "debit", captured), (payable, "credit", captured)],
                ),
                (f"{pid}:fee", [(fees, "debit", 300), (receivable, "credit", 300)]),
            ]
            if refunded:
                events.append(("PaymentRefunded", {"amount": refunded, "refund_id": "psp:4000"}))
                journals.append(
                    (
                        f"{pid}:refund:psp:4000",
                        [(payable, "debit", refunded), (receivable, "credit", refunded)],
                    )
                )
            for version, (kind, data) in enumerate(events, 1):
                run(
                    "INSERT INTO payment_events (payment_id, version, type, data, actor,"
                    " created_at) VALUES (:pid, :v, :t, :d, 'api', :now)",
                    pid=pid,
                    v=version,
                    t=kind,
                    d=json.dumps(data),
                    now=now,
                )
            for journal_id, legs in journals:
                run(
                    "INSERT INTO ledger_journals (id, kind, payment_id, description, created_at)"
                    " VALUES (:j, 'posted', :pid, 'old', :now)",
                    j=journal_id,
                    pid=pid,
                    now=now,
                )
                for account, direction, amount in legs:
                    run(
                        "INSERT INTO ledger_entries (journal_id, account_id, direction,"
                        " amount_minor, currency) VALUES (:j, :a, :d, :x, 'USD')",
                        j=journal_id,
                        a=account,
                        d=direction,
                        x=amount,
                    )


def test_upgrading_moves_each_merchants_money_to_its_own_account(any_engine: Engine) -> None:
    _old_books(any_engine)
    upgrade(any_engine)
    with session_factory(any_engine)() as session:
        balances = {b.merchant_id: b.total for b in merchant_balances(session, 2**40)}
        report = check_books(session, int(time.time()))
    assert balances == {"mer_a": 10_000 - 4_000, "mer_b": 5_000}  # the platform paid fees then
    assert report.clean, report


def test_upgrading_records_old_refunds_so_a_late_webhook_cannot_book_them_again(
    any_engine: Engine,
) -> None:
    from payment_systems.core.payments import booked_refund_ids, state_of
    from payment_systems.database.models import Payment

    _old_books(any_engine)
    upgrade(any_engine)
    with session_factory(any_engine)() as session:
        payment = session.get_one(Payment, "pay_a")
        state = state_of(payment, booked_refund_ids(session, "pay_a"))
    # the PSP lists the old refund (we never knew its id) and a new one made after the upgrade
    intent = {
        "object": "payment_intent",
        "id": "pi_pay_a",
        "status": "succeeded",
        "amount_received": 10_000,
        "latest_charge": {"id": "ch_pay_a", "amount_refunded": 6_000},
    }
    refunds = [
        {"id": "re_old", "amount": 4_000, "created": 1},
        {"id": "re_new", "amount": 2_000, "created": 2},
    ]
    events = events_to_reach(state, view_of(intent, refunds))
    assert [(kind, data["psp_refund_id"]) for kind, data in events] == [
        ("PaymentRefunded", "re_new")
    ]


def test_upgrading_labels_old_journals_for_reconciliation(any_engine: Engine) -> None:
    from payment_systems.core.recon_sources import ledger_from_db

    _old_books(any_engine)
    upgrade(any_engine)
    rows = {
        row.reference: (row.kind, row.amount, row.fee)
        for row in ledger_from_db(session_factory(any_engine))
    }
    assert rows["ch_pay_a"] == ("charge", 10_000, 300)
    assert rows["ch_pay_b"] == ("charge", 5_000, 300)

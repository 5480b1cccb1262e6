"""The three reconciliation sources, from where they really live.

* **Our ledger**: `ledger_from_db` reads the **books**: every journal that
  booked a PSP money movement (a capture, its fee, a refund), with the PSP
  object id and the PSP's timestamp the journal records. Not the payment
  events, not the payment rows: a posting that went wrong must show up here,
  or reconciliation can never see it.
* **The PSP's report**: `psp_from_api` lists balance transactions through the
  official SDK (the sandbox, or Stripe with ``PSP_API_BASE``).
* **The bank statement**: `bank_from_payouts` stands in for the bank's
  file: in the sandbox, every paid payout arrives as one deposit. In
  production this is the bank's CAMT.053 or BAI2 export.

``payment-systems reconcile-sources DIR`` writes all three as CSV, ready for
``payment-systems reconcile``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.core.recon_formats import BankRow, LedgerRow, PspRow
from payment_systems.database.models import LedgerAccount, LedgerEntry, LedgerJournal
from payment_systems.integrations.stripe_client import PSPClient

BOOKED = ("capture", "fee", "refund")


def ledger_from_db(sessions: sessionmaker[Session]) -> list[LedgerRow]:
    """One row per PSP object our journals booked, with the amounts the journals moved.

    The amounts are read from the ``psp_receivable`` legs (what the PSP owes
    us): a capture's gross, its fee, a refund. A charge's row carries its
    gross and its fee, as the PSP's balance transaction does.
    """
    sign = sa.case((LedgerEntry.direction == "debit", 1), else_=-1)
    with sessions() as session:
        rows = session.execute(
            sa.select(
                LedgerJournal.psp_object,
                LedgerJournal.category,
                LedgerJournal.payment_id,
                LedgerJournal.effective_at,
                LedgerEntry.currency,
                sa.func.sum(sign * LedgerEntry.amount_minor),
            )
            .join(LedgerEntry, LedgerEntry.journal_id == LedgerJournal.id)
            .join(LedgerAccount, LedgerEntry.account_id == LedgerAccount.id)
            .where(
                LedgerJournal.category.in_(BOOKED),
                LedgerJournal.psp_object.is_not(None),
                LedgerJournal.kind.in_(["posted", "post"]),
                LedgerAccount.code == "psp_receivable",
            )
            .group_by(
                LedgerJournal.psp_object,
                LedgerJournal.category,
                LedgerJournal.payment_id,
                LedgerJournal.effective_at,
                LedgerEntry.currency,
            )
        ).all()
    gross: dict[str, int] = defaultdict(int)
    fees: dict[str, int] = defaultdict(int)
    info: dict[str, tuple[str, str, str, int]] = {}
    for psp_object, category, payment_id, at, currency, moved in rows:
        ref = str(psp_object)
        kind = "refund" if category == "refund" else "charge"
        if category == "fee":
            fees[ref] += -int(moved)  # the fee leaves psp_receivable: a credit
        else:
            gross[ref] += int(moved)
        if category != "fee" or ref not in info:
            info[ref] = (str(payment_id), kind, str(currency).lower(), int(at or 0))
    return [
        LedgerRow(ref, payment_id, kind, gross[ref], fees[ref], currency, at)
        for ref, (payment_id, kind, currency, at) in sorted(info.items())
    ]


def psp_from_api(psp: PSPClient) -> list[PspRow]:
    """Every balance transaction of the PSP account."""
    rows = []
    listing = psp.stripe.v1.balance_transactions.list(params={"limit": 100})
    for obj in listing.auto_paging_iter():
        t: dict[str, Any] = obj.to_dict()
        rows.append(
            PspRow(
                t["source"],
                t["id"],
                t["reporting_category"],
                t["amount"],
                t["fee"],
                t["net"],
                t["currency"],
                t["created"],
                t.get("payout") or "",
            )
        )
    return rows


def bank_from_payouts(psp: PSPClient) -> list[BankRow]:
    """One deposit per paid payout, on its arrival date."""
    payouts = psp.stripe.v1.payouts.list(params={"limit": 100}).auto_paging_iter()
    return [
        BankRow(p.id, p.amount, p.currency, p.arrival_date) for p in payouts if p.status == "paid"
    ]

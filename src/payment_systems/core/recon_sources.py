"""The three reconciliation sources, from where they really live.

* **Our ledger**: `ledger_from_db` reads the booked captures and refunds
  (``PaymentCaptured`` / ``PaymentRefunded`` events, with the PSP object id and
  the PSP's timestamp each recorded).
* **The PSP's report**: `psp_from_api` lists balance transactions through the
  official SDK (the sandbox, or Stripe with ``PSP_API_BASE``).
* **The bank statement**: `bank_from_payouts` stands in for the bank's
  file: in the sandbox, every paid payout arrives as one deposit. In
  production this is the bank's CAMT.053 or BAI2 export.

``payment-systems reconcile-sources DIR`` writes all three as CSV, ready for
``payment-systems reconcile``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.core.recon_formats import BankRow, LedgerRow, PspRow
from payment_systems.database.models import Payment, PaymentEvent
from payment_systems.integrations.stripe_client import PSPClient


def ledger_from_db(sessions: sessionmaker[Session]) -> list[LedgerRow]:
    """Every capture and refund we booked, keyed by the PSP object it matches."""
    rows: list[LedgerRow] = []
    with sessions() as session:
        events = session.execute(
            sa.select(PaymentEvent.type, PaymentEvent.data, Payment.id, Payment.currency)
            .join(Payment, Payment.id == PaymentEvent.payment_id)
            .where(PaymentEvent.type.in_(["PaymentCaptured", "PaymentRefunded"]))
        ).all()
    for event_type, data, payment_id, currency in events:
        cur = currency.lower()
        if event_type == "PaymentCaptured" and data.get("psp_charge_id"):
            rows.append(
                LedgerRow(
                    data["psp_charge_id"],
                    payment_id,
                    "charge",
                    int(data["amount"]),
                    int(data.get("fee") or 0),
                    cur,
                    int(data["psp_created"]),
                )
            )
        elif event_type == "PaymentRefunded" and data.get("psp_refund_id"):
            rows.append(
                LedgerRow(
                    data["psp_refund_id"],
                    payment_id,
                    "refund",
                    -int(data["amount"]),
                    0,
                    cur,
                    int(data["psp_created"]),
                )
            )
    return rows


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

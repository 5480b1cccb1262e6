"""Balance transactions and daily payouts: the PSP's side of reconciliation.

Every movement of the merchant's balance is a balance transaction: a charge
(amount, fee, net), a refund (negative, no fee returned), a dispute debit and
its fee, a dispute reversal if won, and a payout that empties the available
balance into the bank. Funds become *available* two days after the charge
(T+2, at midnight UTC); each midnight the sandbox pays out everything
available, per currency, as one payout. That is what the bank statement
shows, and why one payout matches many charges.
"""

from __future__ import annotations

from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.fees import counter_fee, dispute_fee, processing_fee
from payment_systems.integrations.psp_sandbox.store import Obj
from payment_systems.money import Money

DAY_S = 86_400
SETTLEMENT_DELAY_DAYS = 2


def midnight_after(ts: int, days: int = 0) -> int:
    """The UTC midnight ``days`` days after the day containing ``ts``.

    Examples:
        >>> midnight_after(1_700_000_000, 2)  # 2023-11-14 22:13 UTC -> 2023-11-16 00:00
        1700092800
    """
    return (ts // DAY_S + days) * DAY_S


def new_transaction(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    fee: int,
    source: str,
    kind: str,
    category: str,
    description: str,
    available_on: int | None = None,
) -> Obj:
    """Create one balance transaction; ``net = amount - fee``, in minor units."""
    txn: Obj = {
        "id": ctx.new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": available_on
        if available_on is not None
        else midnight_after(ctx.now, SETTLEMENT_DELAY_DAYS),
        "created": ctx.now,
        "currency": currency,
        "description": description,
        "fee": fee,
        "fee_details": (
            [{"amount": fee, "currency": currency, "type": "stripe_fee", "description": "Fees"}]
            if fee
            else []
        ),
        "net": amount - fee,
        "payout": None,
        "reporting_category": category,
        "source": source,
        "status": "pending",
        "type": kind,
    }
    return ctx.insert(txn, parent=source)


def charge_balance_transaction(ctx: Ctx, charge: Obj, captured: int) -> Obj:
    """The balance transaction of a capture: the captured amount less the processing fee."""
    fee = processing_fee(Money(captured, charge["currency"])).amount_minor
    return new_transaction(
        ctx,
        amount=captured,
        currency=charge["currency"],
        fee=fee,
        source=charge["id"],
        kind="charge",
        category="charge",
        description=f"Charge for {charge['payment_intent']}",
    )


def refund_balance_transaction(ctx: Ctx, refund: Obj) -> Obj:
    """A refund takes the amount back; the processing fee is not returned."""
    return new_transaction(
        ctx,
        amount=-refund["amount"],
        currency=refund["currency"],
        fee=0,
        source=refund["id"],
        kind="refund",
        category="refund",
        description=f"REFUND FOR CHARGE ({refund['charge']})",
    )


def dispute_balance_transactions(ctx: Ctx, dispute: Obj, *, step: str) -> Obj:
    """The money a dispute moves, as Stripe books it since its 2025 fee change.

    ``withdrawal``: the disputed amount leaves the balance, plus the dispute
    fee (never returned). ``counter``: answering with evidence costs the
    counter fee. ``reinstatement``: a win returns the amount and the counter
    fee.
    """
    fee = dispute_fee(dispute["currency"]).amount_minor
    counter = counter_fee(dispute["currency"]).amount_minor
    amount, fee_minor, category, text = {
        "withdrawal": (-dispute["amount"], fee, "dispute", "Chargeback withdrawal for "),
        "counter": (0, counter, "dispute", "Dispute counter fee for "),
        "reinstatement": (
            dispute["amount"],
            -counter,
            "dispute_reversal",
            "Chargeback reversal for ",
        ),
    }[step]
    return new_transaction(
        ctx,
        amount=amount,
        currency=dispute["currency"],
        fee=fee_minor,
        source=dispute["id"],
        kind="adjustment",
        category=category,
        description=text + dispute["charge"],
    )


def run_payouts(ctx: Ctx, payout_day: int) -> list[Obj]:
    """At midnight ``payout_day``: pay out every available, unpaid transaction, per currency."""
    due: dict[str, list[Obj]] = {}
    for _, txn in ctx.store.find(ctx.conn, ctx.account, "balance_transaction", oldest_first=True):
        if txn["payout"] is None and txn["type"] != "payout" and txn["available_on"] <= payout_day:
            due.setdefault(txn["currency"], []).append(txn)
    payouts = []
    for currency, txns in sorted(due.items()):
        total = sum(t["net"] for t in txns)
        if total <= 0:
            continue  # a negative balance waits for more charges, as Stripe's does
        payout_id = ctx.new_id("po")
        payout_txn = new_transaction(
            ctx,
            amount=-total,
            currency=currency,
            fee=0,
            source=payout_id,
            kind="payout",
            category="payout",
            description="STRIPE PAYOUT",
            available_on=payout_day,
        )
        payout: Obj = {
            "id": payout_id,
            "object": "payout",
            "amount": total,
            "arrival_date": payout_day,
            "automatic": True,
            "balance_transaction": payout_txn["id"],
            "created": payout_day,
            "currency": currency,
            "description": "STRIPE PAYOUT",
            "livemode": False,
            "method": "standard",
            "statement_descriptor": None,
            "status": "paid",
            "type": "bank_account",
        }
        ctx.insert(payout)
        for txn in [*txns, payout_txn]:
            txn.update(payout=payout_id, status="available")
            ctx.save(txn)
        ctx.emit("payout.paid", payout)
        payouts.append(payout)
    return payouts

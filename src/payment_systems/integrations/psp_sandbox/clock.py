"""``POST /_sandbox/clock/advance``: move an account's time forward and let things happen.

Moving the clock is how a test lives through days in milliseconds: charges
become available (T+2), midnight payouts run, disputes open on
``pm_card_createDispute`` charges, and disputes past their deadline or
review period are decided. Work is done day by day, in time order, so a
payout on day 3 includes the dispute debit of day 2.
"""

from __future__ import annotations

from payment_systems.integrations.psp_sandbox import cards, disputes
from payment_systems.integrations.psp_sandbox.balance import DAY_S, midnight_after, run_payouts
from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest
from payment_systems.integrations.psp_sandbox.store import Obj

MAX_ADVANCE_S = 400 * DAY_S


def open_pending_disputes(ctx: Ctx) -> list[Obj]:
    """Open a dispute on each captured ``pm_card_createDispute*`` charge not yet disputed."""
    opened = []
    for _, charge in ctx.store.find(ctx.conn, ctx.account, "charge", oldest_first=True):
        card = cards.lookup(charge["payment_method"] or "")
        if card and card.dispute and charge["captured"] and not charge["disputed"]:
            opened.append(disputes.open_dispute(ctx, charge, card.dispute, inquiry=card.inquiry))
    return opened


def advance(ctx: Ctx, seconds: int) -> dict[str, object]:
    """Advance from ``ctx.now`` by ``seconds``; returns what happened, for the caller."""
    if not 0 < seconds <= MAX_ADVANCE_S:
        raise InvalidRequest(
            f"seconds must be between 1 and {MAX_ADVANCE_S} (400 days)", param="seconds"
        )
    start, end = ctx.now, ctx.now + seconds
    opened = open_pending_disputes(ctx)
    payouts: list[Obj] = []
    midnight = midnight_after(start, 1)
    while midnight <= end:
        ctx.now = midnight
        disputes.tick(ctx)
        payouts += run_payouts(ctx, midnight)
        midnight += DAY_S
    ctx.now = end
    disputes.tick(ctx)
    ctx.store.advance(ctx.conn, ctx.account, seconds)
    return {
        "object": "sandbox.clock",
        "now": end,
        "advanced_by": seconds,
        "payouts": [p["id"] for p in payouts],
        "disputes_opened": [d["id"] for d in opened],
    }

"""The ledger postings each payment event makes: the accounting, apart from the orchestration.

| event | postings |
|---|---|
| ``PaymentAuthorized`` | a pending hold: debit ``psp_receivable``, credit ``merchant_payable`` |
| ``PaymentCaptured`` | post the hold (or post directly), then the PSP fee: debit ``psp_fees`` |
| ``PaymentCanceled`` after an authorization | void the hold |
| ``PaymentRefunded`` | debit ``merchant_payable``, credit ``psp_receivable`` |

Journal ids are derived from the payment and the event (``pay_1:capture``),
so replaying an event can never post twice: the ledger refuses a reused id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payment_systems.core import payment_state as ps
from payment_systems.core.ledger import Ledger, transfer
from payment_systems.money import Money


def post_event(
    ledger: Ledger,
    pid: str,
    currency: str,
    before: ps.PaymentState,
    after: ps.PaymentState,
    event_type: str,
    data: Mapping[str, Any],
) -> None:
    """Write the journals ``event_type`` makes, moving the payment from ``before`` to ``after``."""
    if event_type == ps.AUTHORIZED:
        ledger.hold(
            f"{pid}:auth", "psp_receivable", "merchant_payable",
            Money(after.amount_capturable, currency), "authorization", pid,
        )  # fmt: skip
    elif event_type == ps.CAPTURED:
        captured = Money(after.amount_captured, currency)
        if before.status == "requires_capture":
            ledger.post_hold(f"{pid}:capture", f"{pid}:auth", captured)
        else:
            ledger.post(
                f"{pid}:capture",
                transfer("psp_receivable", "merchant_payable", captured),
                "capture",
                pid,
            )
        fee = data.get("fee")
        if fee:
            ledger.post(
                f"{pid}:fee",
                transfer("psp_fees", "psp_receivable", Money(int(fee), currency)),
                "PSP fee",
                pid,
            )
    elif event_type == ps.CANCELED and before.status == "requires_capture":
        ledger.void_hold(f"{pid}:void", f"{pid}:auth")
    elif event_type == ps.REFUNDED:
        amount = Money(int(data["amount"]), currency)
        ledger.post(
            f"{pid}:refund:{data['refund_id']}",
            transfer("merchant_payable", "psp_receivable", amount),
            "refund",
            pid,
        )

"""The ledger postings each payment event makes: the accounting, apart from the orchestration.

* ``PaymentAuthorized``: a pending hold, debit ``psp_receivable`` and credit
  the merchant's ``merchant_payable``; once only (a re-authorization after an
  unknown capture finds the hold still open).
* ``PaymentCaptured``: post the open hold (all or part of it), or post directly
  if there was none; then the PSP fee, which the merchant pays: debit its
  ``merchant_payable``, credit ``psp_receivable``.
* ``PaymentCanceled`` / ``PaymentFailed``: void the hold, if one is open.
* ``PaymentRefunded``: debit the merchant's ``merchant_payable``, credit
  ``psp_receivable``, in a journal named by the PSP refund id.

The postings read the **ledger**, not the payment's previous status, to
decide between "post the hold" and "post directly". A capture whose outcome
was unknown passes through ``unknown``; branching on the status it came from
would post a fresh capture and leave the authorization hold open forever.

Journal ids are derived from the payment and the fact (``pay_1:capture``,
``pay_1:refund:re_9``), so booking a fact twice is impossible: the ledger (and
the database's primary key) refuses a reused id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payment_systems.core import payment_state as ps
from payment_systems.core.ledger import JournalMeta, Ledger, LedgerError, transfer
from payment_systems.money import Money


@dataclass(frozen=True, slots=True)
class Booking:
    """Whose money a payment's journals move: the payment, its merchant, its currency."""

    payment_id: str
    merchant_id: str
    currency: str


def hold_id(payment_id: str) -> str:
    """The journal id of a payment's authorization hold."""
    return f"{payment_id}:auth"


JOURNAL_ID_MAX = 64  # ledger_journals.id


def refund_journal_id(payment_id: str, psp_refund_id: str) -> str:
    """One journal per PSP refund: the API path and the webhook path name the same one.

    PSP ids are opaque and may grow; an id that would not fit the column is
    replaced by a digest of itself, so both paths still derive the same name.

    Examples:
        >>> refund_journal_id("pay_1", "re_9")
        'pay_1:refund:re_9'
        >>> len(refund_journal_id("pay_" + "0" * 24, "re_" + "x" * 60)) <= 64
        True
    """
    journal_id = f"{payment_id}:refund:{psp_refund_id}"
    if len(journal_id) <= JOURNAL_ID_MAX:
        return journal_id
    digest = hashlib.sha256(psp_refund_id.encode()).hexdigest()
    return f"{payment_id}:refund:h{digest}"[:JOURNAL_ID_MAX]


def post_event(
    ledger: Ledger,
    booking: Booking,
    after: ps.PaymentState,
    event_type: str,
    data: Mapping[str, Any],
) -> None:
    """Write the journals ``event_type`` makes, leaving the payment at ``after``."""
    pid, merchant, currency = booking.payment_id, booking.merchant_id, booking.currency
    auth = hold_id(pid)
    if event_type == ps.AUTHORIZED:
        if ledger.store.get(auth) is None:
            ledger.hold(
                auth, "psp_receivable", "merchant_payable",
                Money(after.amount_capturable, currency), "authorization", pid, merchant=merchant,
            )  # fmt: skip
        elif not ledger.is_open(auth):
            raise LedgerError(f"payment {pid} was authorized again after its hold was resolved")
    elif event_type == ps.CAPTURED:
        captured = Money(after.amount_captured, currency)
        charge = data.get("psp_charge_id")
        created, available = data.get("psp_created"), data.get("psp_available_on")
        meta = JournalMeta("capture", charge, created, available)
        if ledger.is_open(auth):
            ledger.post_hold(f"{pid}:capture", auth, captured, meta)
        elif ledger.store.get(auth) is None:
            legs = transfer("psp_receivable", "merchant_payable", captured, merchant=merchant)
            ledger.post(f"{pid}:capture", legs, "capture", pid, meta)
        else:
            raise LedgerError(f"payment {pid} was captured after its hold was voided")
        fee = int(data.get("fee") or 0)
        if fee:
            legs = transfer("merchant_payable", "psp_receivable", Money(fee, currency),
                            merchant=merchant)  # fmt: skip
            ledger.post(f"{pid}:fee", legs, "PSP fee", pid, JournalMeta("fee", charge, created,
                                                                         available))  # fmt: skip
    elif event_type in (ps.CANCELED, ps.FAILED):
        if ledger.is_open(auth):
            ledger.void_hold(f"{pid}:void", auth)
    elif event_type == ps.REFUNDED:
        psp_refund = str(data.get("psp_refund_id") or data["refund_id"])
        legs = transfer("merchant_payable", "psp_receivable", Money(int(data["amount"]), currency),
                        merchant=merchant)  # fmt: skip
        meta = JournalMeta("refund", data.get("psp_refund_id"), data.get("psp_created"), None)
        ledger.post(refund_journal_id(pid, psp_refund), legs, "refund", pid, meta)

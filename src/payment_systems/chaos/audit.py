"""After the fault: did anyone lose money? Three checks, each against the PSP's truth.

* **Duplicate charges**: the PSP's paid charges grouped by the load key
  (the client's idempotency key); every charge beyond the first is a
  customer charged twice.
* **Lost payments**: a key the PSP charged that our database does not show
  as paid (the customer paid, we would not ship), or one we show as paid
  that the PSP never charged (we would ship, nobody paid).
* **Ledger-versus-PSP breaks**: reconciliation of the journals we booked
  (captures, fees, refunds, read from the books) against the PSP's balance
  transactions (`core.reconciliation`), counting everything it cannot
  explain by timing.
* **Book breaks**: the books' own checks (`core.ledger_checks`): an
  unbalanced journal, an open hold on a finished payment, or a merchant
  whose balance is not its payments' net.

Before checking, the audit does what production does after an incident:
it lets the PSP's webhooks land and runs the janitor, which asks the PSP
about every payment left ``unknown`` or stalled in ``processing``. A run
passes only if, after that, all three counts are zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from payment_systems.core.ledger_checks import check_books
from payment_systems.core.payments import PaymentService
from payment_systems.core.recon_sources import ledger_from_db, psp_from_api
from payment_systems.core.reconciliation import BreakClass, reconcile
from payment_systems.database.models import Payment
from payment_systems.database.session import session_factory
from payment_systems.infra import create_engine
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.load_tests.system import RunningSystem

PAID = ("succeeded", "requires_capture", "partially_refunded", "refunded")
UNSETTLED = ("new", "processing", "unknown")


@dataclass(frozen=True, slots=True)
class Financial:
    """The money side of a run; the first three must be 0."""

    duplicate_charges: int
    lost_payments: int
    ledger_psp_breaks: int
    book_breaks: int
    psp_charges: int
    payments_recorded: int
    resolved_by_janitor: int
    # rows the PSP never saw: their client got a 503 and its retry with the same key will
    # carry the payment on; nobody was charged
    awaiting_retry: int
    examples: list[str]

    @property
    def clean(self) -> bool:
        return (
            self.duplicate_charges == 0
            and self.lost_payments == 0
            and not self.ledger_psp_breaks
            and not self.book_breaks
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def charged_keys(system: RunningSystem, run_id: str) -> dict[str, Any]:
    """The PSP's view: every load key of this run it charged, and the duplicates."""
    response = httpx.get(
        f"{system.psp_url}/_sandbox/charges/duplicates",
        params={"metadata_key": "load_key", "run_key": "load_run", "run": run_id, "list": "1"},
        auth=(system.psp_key, ""),
        timeout=120,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _statuses(service: PaymentService, run_id: str) -> dict[str, str]:
    with service.sessions() as session:
        rows = session.execute(
            sa.select(Payment.idempotency_key, Payment.status).where(
                Payment.idempotency_key.like(f"{run_id}-%")
            )
        ).all()
    return {str(key): str(status) for key, status in rows}


def settle(service: PaymentService, run_id: str, wait_s: float) -> int:
    """Let webhooks land (until nothing changes for 2 s, at most ``wait_s``), then run the
    janitor; returns how many payments the janitor settled."""
    deadline = time.monotonic() + wait_s
    last, quiet_since = _statuses(service, run_id), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0:
        time.sleep(0.5)
        now = _statuses(service, run_id)
        if now != last:
            last, quiet_since = now, time.monotonic()
    run = service.run_janitor(min_age_s=0)
    return sum(p.status not in UNSETTLED for p in run.payments)


def audit(system: RunningSystem, run_id: str, *, settle_s: float = 15.0) -> Financial:
    """Settle, then count duplicate charges, lost payments and reconciliation breaks."""
    engine = create_engine(system.database_url)
    psp = PSPClient(system.psp_key, system.psp_url)
    try:
        service = PaymentService(session_factory(engine), psp)
        resolved = settle(service, run_id, settle_s)
        statuses = _statuses(service, run_id)
        at_psp = charged_keys(system, run_id)
        charged = set(at_psp["charged_keys"])
        paid_here = {k for k, s in statuses.items() if s in PAID}
        lost = sorted((charged - paid_here) | (paid_here - charged))
        report = reconcile(  # it streams: both sides sorted by reference
            sorted(ledger_from_db(service.sessions), key=lambda r: r.reference),
            sorted(psp_from_api(psp), key=lambda r: r.reference),
            [],  # no payouts yet: the bank leg is the settlement page's business
            cutoff=int(datetime.now(UTC).timestamp()),
        )
        breaks = [
            b
            for b in report.unexplained
            if b.cls not in (BreakClass.MISSING_IN_BANK,) and b.source in ("ledger", "psp")
        ]
        with service.sessions() as session:
            books = check_books(session, int(time.time()))
        book_breaks = [
            *(f"unbalanced:{j}" for j in books.unbalanced_journals),
            *(f"open_hold:{p}" for p in books.open_holds_on_finished_payments),
            *(f"balance:{b.merchant_id}:{b.currency}" for b in books.balance_breaks),
            *(f"unsettled:{p}" for p in books.unsettled_payments),
        ]
        return Financial(
            duplicate_charges=int(at_psp["duplicate_charges"]),
            lost_payments=len(lost),
            ledger_psp_breaks=len(breaks),
            book_breaks=len(book_breaks),
            psp_charges=int(at_psp["charges"]),
            payments_recorded=len(statuses),
            resolved_by_janitor=resolved,
            awaiting_retry=sum(
                1 for k, s in statuses.items() if s in UNSETTLED and k not in charged
            ),
            examples=[
                *(f"{k}: ours={statuses.get(k, 'missing')}, psp={k in charged}" for k in lost[:3]),
                *(f"{b.cls}:{b.reference}" for b in breaks[:3]),
                *book_breaks[:3],
            ],
        )
    finally:
        engine.dispose()

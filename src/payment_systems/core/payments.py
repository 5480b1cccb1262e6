"""The payment service: create, capture and refund, each a resumable sequence of steps.

Every step that changes a payment writes, in **one transaction**, the new
state, the event that explains it, and the ledger postings that account for
it. The PSP call happens *between* transactions, never inside one, so no
database lock is held while the network is slow.

A create runs in recovery points, like Brandur's atomic phases:

1. ``payment_created``: the row (unique per merchant and idempotency key)
   and its ``PaymentCreated`` event exist.
2. ``psp_called``: the PSP answered.
3. ``recorded``: the outcome, its events and its postings are committed.

If the process dies anywhere, the client's retry finds the same payment row
(same merchant, same key) and continues from its status. The PSP call uses
a key derived from the payment id, so a repeated call is a replay at the
PSP. That is why a crash at any point still gives exactly one charge.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.chargebacks.prevention import ThreeDSPolicy
from payment_systems.core import payment_state as ps
from payment_systems.core.ledger import Ledger
from payment_systems.core.payment_postings import post_event
from payment_systems.core.psp_sync import events_to_reach, view_of
from payment_systems.database.ledger_store import SqlJournalStore
from payment_systems.database.models import OutboxMessage, Payment, PaymentEvent
from payment_systems.database.session import unit_of_work
from payment_systems.errors import PaymentSystemsError
from payment_systems.fraud.velocity import (
    Attempt,
    Decision,
    FraudBlocked,
    VelocityRules,
    card_fingerprint,
)
from payment_systems.integrations.stripe_client import (
    PSPClient,
    PSPDeclined,
    PSPOutcomeUnknown,
)
from payment_systems.money import Money
from payment_systems.patterns.outbox import partition_of


class PaymentNotFound(PaymentSystemsError):
    code = "payment_not_found"
    http_status = 404


class PaymentBusy(PaymentSystemsError):
    """Another request changed this payment at the same moment; retry."""

    code = "payment_busy"
    http_status = 409


class RefundTooLarge(PaymentSystemsError):
    code = "refund_exceeds_captured"
    http_status = 400


@dataclass(frozen=True, slots=True)
class CreatePayment:
    """The command to take a payment (amounts in minor units)."""

    amount: Money
    payment_method: str
    capture_method: str = "automatic"
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    client_ip: str | None = None  # for the fraud velocity rules
    risk_score: int | None = None  # the merchant's fraud score, 0-99: decides 3DS


def _no_crash(point: str) -> None:
    """Production: nothing. Chaos and crash tests inject a hook that kills the process."""


def state_of(payment: Payment) -> ps.PaymentState:
    """The domain state behind a stored payment row (the projection, read back)."""
    return ps.PaymentState(
        status=payment.status,
        amount=payment.amount_minor,
        currency=payment.currency,
        capture_method=payment.capture_method,
        amount_captured=payment.amount_captured,
        amount_refunded=payment.amount_refunded,
        amount_capturable=payment.amount_minor if payment.status == "requires_capture" else 0,
        psp_intent_id=payment.psp_intent_id,
        failure_code=payment.failure_code,
        version=payment.version,
    )


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


class PaymentService:
    """Orchestrates the database, the ledger and the PSP for payments."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        psp: PSPClient,
        *,
        new_id: Callable[[], str] = new_payment_id,
        crash_point: Callable[[str], None] = _no_crash,
        fraud: VelocityRules | None = None,
        three_ds: ThreeDSPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.psp = psp
        self.new_id = new_id
        self.crash_point = crash_point
        self.fraud = fraud
        self.three_ds = three_ds

    # -- commands -------------------------------------------------------------------

    def create(self, merchant_id: str, idempotency_key: str, command: CreatePayment) -> Payment:
        """Take a payment; resumes the same payment if this key was seen before."""
        challenge = self.three_ds is not None and self.three_ds.challenge(command.risk_score)
        payment, fresh = self._get_or_create(merchant_id, idempotency_key, command, challenge)
        self.crash_point("payment_created")
        if payment.status not in ("processing",):
            return payment
        if fresh and self.fraud is not None:
            self._screen(payment, command)
        try:
            intent = self.psp.authorize(
                merchant_id=merchant_id,
                payment_id=payment.id,
                amount=command.amount,
                payment_method=command.payment_method,
                capture=command.capture_method == "automatic",
                metadata=dict(command.metadata),
                three_d_secure=challenge,
            )
        except PSPDeclined as exc:
            if self.fraud is not None:
                self.fraud.record_decline(merchant_id)
            data = {
                "code": "card_declined",
                "decline_code": exc.decline_code,
                "psp_intent_id": exc.intent_id,
            }
            return self._record(payment.id, [(ps.FAILED, data)])
        except PSPOutcomeUnknown as exc:
            return self._record(payment.id, [(ps.UNKNOWN, {"operation": exc.operation})])
        self.crash_point("psp_called")
        recorded = self._record(payment.id, self._events_from_intent(intent), intent)
        self.crash_point("recorded")
        return recorded

    def capture(self, merchant_id: str, payment_id: str, amount: Money | None = None) -> Payment:
        """Capture an authorized payment, fully or partly (the rest is released)."""
        payment = self.get(merchant_id, payment_id)
        if payment.status != "requires_capture":
            raise ps.InvalidTransition(
                f"payment {payment_id} is {payment.status}; only requires_capture can be captured",
                status=payment.status,
            )
        try:
            intent = self.psp.capture(
                merchant_id=merchant_id,
                payment_id=payment_id,
                intent_id=str(payment.psp_intent_id),
                amount=amount,
            )
        except PSPOutcomeUnknown as exc:
            return self._record(payment_id, [(ps.UNKNOWN, {"operation": exc.operation})])
        return self._record(payment_id, self._events_from_intent(intent), intent)

    def refund(
        self, merchant_id: str, payment_id: str, refund_key: str, amount: Money | None = None
    ) -> tuple[Payment, str, Money]:
        """Refund part or all of what was captured: returns (payment, refund id, amount).

        ``refund_key`` (the request's idempotency key) names the refund, so the
        PSP call for it is idempotent too.
        """
        payment = self.get(merchant_id, payment_id)
        remaining = payment.amount_captured - payment.amount_refunded
        if payment.status not in ("succeeded", "partially_refunded"):
            raise ps.InvalidTransition(
                f"payment {payment_id} is {payment.status}; only captured payments can be refunded",
                status=payment.status,
            )
        value = Money(remaining, payment.currency) if amount is None else amount
        if value.currency != payment.currency or not 0 < value.amount_minor <= remaining:
            raise RefundTooLarge(
                f"refund of {value} is more than the {Money(remaining, payment.currency)} "
                f"left to refund on {payment_id}",
                payment_id=payment_id,
            )
        refund_id = (
            "re_" + hashlib.sha256(f"{merchant_id}\x1f{refund_key}".encode()).hexdigest()[:20]
        )
        psp_refund = self.psp.refund(
            merchant_id=merchant_id,
            payment_id=payment_id,
            refund_id=refund_id,
            intent_id=str(payment.psp_intent_id),
            amount=value,
        )
        data = {
            "amount": value.amount_minor,
            "refund_id": refund_id,
            "psp_refund_id": psp_refund.id,
            "psp_created": psp_refund.created,
        }
        return self._record(payment_id, [(ps.REFUNDED, data)]), refund_id, value

    def resolve_unknown(self, merchant_id: str, payment_id: str) -> Payment:
        """The janitor's step: ask the PSP what became of an ``unknown`` payment; record it."""
        payment = self.get(merchant_id, payment_id)
        if payment.status != "unknown":
            return payment
        intent = self.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment_id)
        if intent is None:  # the PSP never saw it: re-drive with the same PSP key, safely
            # ...and with the same parameters: the first attempt may still be on its way
            # (held in a partition), and a PSP refuses a key reused with other parameters.
            created = next(data for kind, data in self.events(payment_id) if kind == ps.CREATED)
            intent = self.psp.authorize(
                merchant_id=merchant_id,
                payment_id=payment_id,
                amount=Money(payment.amount_minor, payment.currency),
                payment_method=payment.payment_method,
                capture=payment.capture_method == "automatic",
                metadata=dict(payment.metadata_ or {}),
                three_d_secure=bool(created.get("three_d_secure", False)),
            )
        return self._record(payment_id, self._events_from_intent(intent), intent)

    def settle_stalled(self, merchant_id: str, payment_id: str) -> Payment:
        """A payment left in ``processing`` (its request died after the PSP call): ask the PSP.

        If the PSP has it, record what the PSP says, as the webhook would have.
        If not, the PSP was never reached: the client was answered with an
        error, and its retry with the same key carries the payment on, so we
        leave it alone rather than charge a customer who was told it failed.
        """
        payment = self.get(merchant_id, payment_id)
        if payment.status != "processing":
            return payment
        intent = self.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment_id)
        if intent is None:
            return payment
        return self._record(payment_id, self._events_from_intent(intent), intent)

    def run_janitor(self, min_age_s: float = 60.0) -> list[Payment]:
        """Resolve every ``unknown`` or stalled ``processing`` payment older than ``min_age_s``.

        The age gives a slow PSP call time to finish (and a search index time
        to catch up) before we ask; Kill Bill's janitor waits the same way.
        Returns the payments it looked at, as they are now.
        """
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=min_age_s)
        with self.sessions() as session:
            stuck = session.execute(
                sa.select(Payment.merchant_id, Payment.id, Payment.status).where(
                    Payment.status.in_(("unknown", "processing")), Payment.updated_at <= cutoff
                )
            ).all()
        return [
            self.resolve_unknown(merchant_id, payment_id)
            if status == "unknown"
            else self.settle_stalled(merchant_id, payment_id)
            for merchant_id, payment_id, status in stuck
        ]

    def get(self, merchant_id: str, payment_id: str) -> Payment:
        """A payment of this merchant; another merchant's payment is simply not found."""
        with self.sessions() as session:
            payment = session.scalar(
                sa.select(Payment).where(
                    Payment.id == payment_id, Payment.merchant_id == merchant_id
                )
            )
        if payment is None:
            raise PaymentNotFound(
                f"no payment {payment_id!r} for this merchant", payment_id=payment_id
            )
        return payment

    def events(self, payment_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The payment's events in order (the audit trail)."""
        with self.sessions() as session:
            rows = session.scalars(
                sa.select(PaymentEvent)
                .where(PaymentEvent.payment_id == payment_id)
                .order_by(PaymentEvent.version)
            )
            return [(row.type, dict(row.data)) for row in rows]

    # -- steps ----------------------------------------------------------------------

    def _screen(self, payment: Payment, command: CreatePayment) -> None:
        """Velocity rules: a block fails the payment (recorded as an event) and raises."""
        assert self.fraud is not None
        verdict = self.fraud.check(
            Attempt(
                merchant_id=payment.merchant_id,
                card_fingerprint=card_fingerprint(command.payment_method),
                amount_minor=command.amount.amount_minor,
                ip=command.client_ip,
                customer_id=command.metadata.get("customer_id"),
            )
        )
        if verdict.decision is Decision.BLOCK:
            data = {"code": "fraud_blocked", "rule": verdict.rule, "value": verdict.value}
            self._record(payment.id, [(ps.FAILED, data)])
            raise FraudBlocked(verdict)

    def _get_or_create(
        self, merchant_id: str, key: str, command: CreatePayment, three_d_secure: bool
    ) -> tuple[Payment, bool]:
        with unit_of_work(self.sessions) as session:
            existing = session.scalar(
                sa.select(Payment).where(
                    Payment.merchant_id == merchant_id, Payment.idempotency_key == key
                )
            )
            if existing is not None:
                return existing, False
            payment = Payment(
                id=self.new_id(),
                merchant_id=merchant_id,
                idempotency_key=key,
                amount_minor=command.amount.amount_minor,
                currency=command.amount.currency,
                status="new",
                capture_method=command.capture_method,
                payment_method=command.payment_method,
                description=command.description,
                metadata_=dict(command.metadata),
            )
            session.add(payment)
            session.flush()
            data = {
                "amount": command.amount.amount_minor,
                "currency": command.amount.currency,
                "capture_method": command.capture_method,
                "three_d_secure": three_d_secure,  # a re-drive must ask the PSP the same way
            }
            self.apply_events(session, payment, [(ps.CREATED, data)])
            return payment, True

    def _events_from_intent(self, intent: stripe.PaymentIntent) -> list[tuple[str, dict[str, Any]]]:
        charge = intent.latest_charge if isinstance(intent.latest_charge, stripe.Charge) else None
        txn = charge.balance_transaction if charge is not None else None
        fee = txn.fee if isinstance(txn, stripe.BalanceTransaction) else None
        base = {"psp_intent_id": intent.id}
        if intent.status == "succeeded":
            booked = {
                "amount": intent.amount_received,
                "fee": fee,
                "psp_charge_id": charge.id if charge is not None else None,
                "psp_created": txn.created if isinstance(txn, stripe.BalanceTransaction) else None,
            }
            return [(ps.CAPTURED, {**base, **booked})]
        if intent.status == "requires_capture":
            return [(ps.AUTHORIZED, {**base, "amount_capturable": intent.amount_capturable})]
        if intent.status == "requires_action":  # 3DS: the customer must authenticate first
            return [(ps.ACTION_REQUIRED, base)]
        if intent.status == "canceled":
            return [(ps.CANCELED, base)]
        error = intent.last_payment_error
        code = getattr(error, "code", None) or intent.status
        return [
            (
                ps.FAILED,
                {**base, "code": code, "decline_code": getattr(error, "decline_code", None)},
            )
        ]

    def _record(
        self,
        payment_id: str,
        events: list[tuple[str, dict[str, Any]]],
        intent: stripe.PaymentIntent | None = None,
    ) -> Payment:
        """Apply ``events``; if they came from the PSP, converge with a concurrent writer.

        The PSP's webhook can record the very answer we are recording (the
        PSP sent it while our request was still on its way back). Both derive
        events from the PSP's truth, so the loser of that race re-reads the
        payment and applies only what the winner did not, instead of failing
        a payment that succeeded.
        """
        try:
            with unit_of_work(self.sessions) as session:
                payment = session.get_one(Payment, payment_id)
                self.apply_events(session, payment, events)
                return payment
        except IntegrityError as exc:  # a concurrent writer took the same event version
            if intent is None:
                raise PaymentBusy(f"payment {payment_id} changed concurrently; retry") from exc
        except ps.InvalidTransition:  # the writer committed before we even read the payment
            if intent is None:
                raise
        with unit_of_work(self.sessions) as session:
            payment = session.get_one(Payment, payment_id)
            missing = events_to_reach(state_of(payment), view_of(intent.to_dict()))
            if missing:
                self.apply_events(session, payment, missing)
            return payment

    def apply_events(
        self, session: Session, payment: Payment, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """State, events, ledger postings and outbox rows for ``events``, in one transaction.

        All four are written together or not at all: that is the transactional
        outbox, and it is why a crash can never leave a state change that was
        not announced, or an announcement of a change that did not happen.
        """
        state = state_of(payment)
        ledger = Ledger(SqlJournalStore(session))
        for event_type, data in events:
            before = state
            state = ps.apply(state, event_type, data)
            session.add(
                PaymentEvent(
                    payment_id=payment.id,
                    version=state.version,
                    type=event_type,
                    data=data,
                    actor="api",
                )
            )
            session.add(
                OutboxMessage(
                    event_id=f"{payment.id}:{state.version}",
                    aggregate_id=payment.id,
                    partition=partition_of(payment.id),
                    type=event_type,
                    payload={
                        "payment_id": payment.id,
                        "merchant_id": payment.merchant_id,
                        "version": state.version,
                        "type": event_type,
                        "status": state.status,
                        "data": data,
                    },
                )
            )
            post_event(ledger, payment.id, payment.currency, before, state, event_type, data)
        payment.status = state.status
        payment.amount_captured = state.amount_captured
        payment.amount_refunded = state.amount_refunded
        payment.psp_intent_id = state.psp_intent_id
        payment.failure_code = state.failure_code
        payment.version = state.version
        session.flush()

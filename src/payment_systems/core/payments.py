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
import logging
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
from payment_systems.core.payment_postings import Booking, post_event
from payment_systems.core.psp_sync import PspRefund, PspView, events_to_reach, view_of
from payment_systems.database.ledger_store import SqlJournalStore
from payment_systems.database.models import OutboxMessage, Payment, PaymentEvent, Refund
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
    PSPRequestError,
    PSPUnavailable,
)
from payment_systems.money import Money
from payment_systems.patterns.outbox import partition_of

log = logging.getLogger(__name__)


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


class CaptureTooLarge(PaymentSystemsError):
    """A capture of more than the authorization: the client's mistake, never worth a retry."""

    code = "capture_exceeds_authorized"
    http_status = 400


class KeyReusedWithOtherRequest(PaymentSystemsError):
    """The key names an earlier, different request: the same answer Redis gives (422).

    Redis forgets a key after 24 h; the payment row does not. Without this
    check, a key reused after expiry would replay the *old* payment with 201,
    whatever the new body asked for.
    """

    code = "idempotency_key_reused"
    http_status = 422


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
    fingerprint: str | None = None  # of the HTTP request, stored with the payment


def _no_crash(point: str) -> None:
    """Production: nothing. Chaos and crash tests inject a hook that kills the process."""


def state_of(payment: Payment, refund_ids: frozenset[str] = frozenset()) -> ps.PaymentState:
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
        fee=payment.fee_minor or 0,
        refund_ids=refund_ids,
    )


def booked_refund_ids(session: Session, payment_id: str) -> frozenset[str]:
    """The PSP refund ids already booked on a payment."""
    rows = session.scalars(
        sa.select(Refund.psp_refund_id).where(
            Refund.payment_id == payment_id,
            Refund.status == "succeeded",
            Refund.psp_refund_id.is_not(None),
        )
    )
    return frozenset(str(r) for r in rows)


def three_d_secure_of(events: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether the payment's PSP calls ask for 3DS: the screening's choice, else the creation's.

    ``PaymentCreated`` records the risk-score policy's choice, and
    ``PaymentScreened`` (later) records the final one, which also asks for 3DS
    on a fraud ``review``. A re-drive must send the PSP exactly what the
    first attempt sent. A PSP refuses a key reused with other parameters, and
    dropping 3DS would quietly undo the review's step-up.
    """
    chosen = False
    for kind, data in events:
        if kind in (ps.CREATED, ps.SCREENED):
            chosen = bool(data.get("three_d_secure", chosen))
    return chosen


def _raise_if_broken_books(exc: IntegrityError) -> None:
    """A CHECK violation (the database's ledger guards) is a bug, never a race to retry."""
    if getattr(exc.orig, "sqlstate", None) == "23514":
        raise exc


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


def refund_id_for(merchant_id: str, refund_key: str) -> str:
    """Our id for the refund a request names: the same key always names the same refund."""
    return "re_" + hashlib.sha256(f"{merchant_id}\x1f{refund_key}".encode()).hexdigest()[:20]


@dataclass
class JanitorRun:
    """What one janitor pass did: the payments and refunds it settled, and what failed.

    A failure on one payment is logged and counted here, never raised: one
    bad payment must not stop the janitor from settling every later one.
    """

    payments: list[Payment] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, error)


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
        three_d_secure = self._screen(payment, command, challenge, fresh=fresh)
        try:
            intent = self.psp.authorize(
                merchant_id=merchant_id,
                payment_id=payment.id,
                amount=command.amount,
                payment_method=command.payment_method,
                capture=command.capture_method == "automatic",
                metadata=dict(command.metadata),
                three_d_secure=three_d_secure,
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
        """Capture an authorized payment, fully or partly (the rest is released).

        A payment whose last operation had an unknown outcome is first settled
        with the PSP: capturing blind could capture what a lost request
        already captured, or act on an authorization that was voided.
        """
        payment = self.resolve_unknown(merchant_id, payment_id)
        if payment.status != "requires_capture":
            raise ps.InvalidTransition(
                f"payment {payment_id} is {payment.status}; only requires_capture can be captured",
                status=payment.status,
            )
        authorized = Money(payment.amount_minor, payment.currency)
        if amount is not None and (
            amount.currency != authorized.currency
            or not 0 < amount.amount_minor <= authorized.amount_minor
        ):
            raise CaptureTooLarge(
                f"cannot capture {amount} of {payment_id}: between 0 and the {authorized} "
                "authorized can be captured",
                payment_id=payment_id,
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
        except PSPRequestError as exc:  # the PSP knows better (a partial capture already made)
            if exc.context.get("code_detail") == "amount_too_large":
                raise CaptureTooLarge(exc.message, payment_id=payment_id) from exc
            raise
        return self._record(payment_id, self._events_from_intent(intent), intent)

    def cancel(self, merchant_id: str, payment_id: str) -> Payment:
        """Void an authorization (``requires_capture`` or ``requires_action``): nothing is charged.

        Canceling a canceled payment answers with it, so a retry is harmless.
        """
        payment = self.resolve_unknown(merchant_id, payment_id)
        if payment.status == "canceled":
            return payment
        if payment.status not in ("requires_capture", "requires_action"):
            raise ps.InvalidTransition(
                f"payment {payment_id} is {payment.status}; only an authorization that was not "
                "captured can be canceled (refund a captured payment instead)",
                status=payment.status,
            )
        try:
            intent = self.psp.cancel(
                merchant_id=merchant_id, payment_id=payment_id, intent_id=str(payment.psp_intent_id)
            )
        except PSPOutcomeUnknown as exc:
            return self._record(payment_id, [(ps.UNKNOWN, {"operation": exc.operation})])
        return self._record(payment_id, self._events_from_intent(intent), intent)

    def refund(
        self, merchant_id: str, payment_id: str, refund_key: str, amount: Money | None = None
    ) -> tuple[Payment, str, Money]:
        """Refund part or all of what was captured: returns (payment, refund id, amount).

        ``refund_key`` (the request's idempotency key) names the refund, so the
        PSP call for it is idempotent too. Three short steps, no network call
        inside a transaction:

        1. **Reserve**: a ``refunds`` row (``pending``) for the amount, checked
           against what is left once the other refunds in flight are counted.
           The payment row is locked for that check on PostgreSQL, so two
           concurrent partial refunds cannot both claim the same remainder.
        2. **Call the PSP** with a key derived from the refund id.
        3. **Book** it by the PSP's refund id, unless the webhook already did.

        An unknown outcome leaves the row ``unknown`` (the janitor asks the
        PSP); a refusal marks a ``pending`` row ``failed``, releasing the
        reservation. A retry of a refund that may have landed asks the PSP
        first: its idempotency key may have expired (Stripe keeps keys for
        24 h), and calling again would then refund the customer twice.
        """
        refund_id = refund_id_for(merchant_id, refund_key)
        payment = self.get(merchant_id, payment_id)
        row, fresh = self._reserve_refund(payment, refund_id, amount)
        value = Money(row.amount_minor, row.currency)
        if row.status == "succeeded":
            return self.get(merchant_id, payment_id), refund_id, value
        if not fresh:
            found = self._psp_refund_named(payment, refund_id)
            if found is not None and found.get("status", "succeeded") == "succeeded":
                booked = self._book_refund(payment_id, PspRefund.of(found))
                return booked, refund_id, value
        psp_refund = self._call_refund(payment, refund_id, value)
        if psp_refund is None:  # accepted, still pending at the PSP: the janitor books it
            return self.get(merchant_id, payment_id), refund_id, value
        return self._book_refund(payment_id, psp_refund), refund_id, value

    def refund_status(self, refund_id: str) -> str:
        """``succeeded``, ``pending`` (at the PSP, or unknown) or ``failed``: what a client sees."""
        with self.sessions() as session:
            status = session.get_one(Refund, refund_id).status
        return "pending" if status in ("pending", "unknown") else status

    def _psp_refund_named(self, payment: Payment, refund_id: str) -> dict[str, Any] | None:
        """The PSP's refund carrying our ``refund_id`` in its metadata, if there is one."""
        listed = self.psp.list_refunds(str(payment.psp_intent_id))
        return next(
            (r for r in listed if (r.get("metadata") or {}).get("refund_id") == refund_id), None
        )

    def _call_refund(self, payment: Payment, refund_id: str, value: Money) -> PspRefund | None:
        """Call the PSP; None if it accepted the refund but has not finished it (``pending``).

        Only a ``pending`` row can become ``failed`` here: a row already
        ``unknown`` may have landed at the PSP, so an error on its re-drive
        leaves it ``unknown`` for the janitor, which asks the PSP by id.
        """
        try:
            refund = self.psp.refund(
                merchant_id=payment.merchant_id,
                payment_id=payment.id,
                refund_id=refund_id,
                intent_id=str(payment.psp_intent_id),
                amount=value,
            )
        except PSPOutcomeUnknown:
            self._set_refund_status(refund_id, "unknown", None, ("pending", "unknown", "failed"))
            raise
        except PSPUnavailable:
            self._set_refund_status(refund_id, "failed", "psp_unavailable", ("pending",))
            raise
        except PSPRequestError as exc:
            code = str(exc.context.get("code_detail") or "psp_request_invalid")
            self._set_refund_status(refund_id, "failed", code, ("pending",))
            if code in ("amount_too_large", "charge_already_refunded"):
                raise RefundTooLarge(
                    f"the PSP refused a refund of {value} on {payment.id}: {exc.message}",
                    payment_id=payment.id,
                ) from exc
            raise
        found = refund.to_dict()
        if found.get("status", "succeeded") != "succeeded":
            # pending at the PSP (some methods settle refunds later): not money moved yet
            self._set_refund_status(refund_id, "unknown", None, ("pending", "unknown", "failed"))
            return None
        return PspRefund.of(found)

    def resolve_unknown(self, merchant_id: str, payment_id: str) -> Payment:
        """Ask the PSP what became of an ``unknown`` payment, and record it.

        With the PSP's intent id known (an unknown capture or cancel), read the
        intent itself; the events that bring us up to it post or void the
        authorization hold through the ledger. Without it (an unknown
        authorization), search by our metadata; if the PSP never saw it,
        re-drive it with the same PSP key and the same parameters.
        """
        payment = self.get(merchant_id, payment_id)
        if payment.status != "unknown":
            return payment
        if payment.psp_intent_id:
            return self._converge(payment_id, self.psp_view(payment.psp_intent_id))
        found = self.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment_id)
        if found is not None:  # search results carry no fee: read the whole intent
            return self._converge(payment_id, self.psp_view(str(found.id)))
        # The PSP never saw it: re-drive with the same PSP key, safely
        # ...and with the same parameters: the first attempt may still be on its way
        # (held in a partition), and a PSP refuses a key reused with other parameters.
        three_d_secure = three_d_secure_of(self.events(payment_id))
        intent = self.psp.authorize(
            merchant_id=merchant_id,
            payment_id=payment_id,
            amount=Money(payment.amount_minor, payment.currency),
            payment_method=payment.payment_method,
            capture=payment.capture_method == "automatic",
            metadata=dict(payment.metadata_ or {}),
            three_d_secure=three_d_secure,
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
        found = self.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment_id)
        if found is None:
            return payment
        return self._converge(payment_id, self.psp_view(str(found.id)))

    def resolve_refund(self, refund_id: str) -> Refund:
        """The janitor's step for a refund left ``pending`` or ``unknown``: ask the PSP.

        Found at the PSP (by our refund id in its metadata): book it. Not
        found and ``unknown``: re-drive it with the same PSP key, which the PSP
        replays if the first attempt did land after all. Not found and
        ``pending`` (the request died before the PSP answered): mark it
        ``failed``, releasing its reservation; the client's retry with the
        same key re-drives it.
        """
        with self.sessions() as session:
            row = session.get_one(Refund, refund_id)
            payment = session.get_one(Payment, row.payment_id)
        if row.status not in ("pending", "unknown"):
            return row
        found = self._psp_refund_named(payment, refund_id)
        status = None if found is None else str(found.get("status", "succeeded"))
        if found is not None and status == "succeeded":
            self._book_refund(payment.id, PspRefund.of(found))
        elif status in ("failed", "canceled"):
            self._set_refund_status(refund_id, "failed", status, ("pending", "unknown"))
        elif found is not None:
            pass  # pending at the PSP: still in flight, ask again next run
        elif row.status == "unknown":
            value = Money(row.amount_minor, row.currency)
            psp_refund = self._call_refund(payment, refund_id, value)
            if psp_refund is not None:
                self._book_refund(payment.id, psp_refund)
        else:
            self._set_refund_status(refund_id, "failed", "not_sent", ("pending",))
        with self.sessions() as session:
            return session.get_one(Refund, refund_id)

    def run_janitor(self, min_age_s: float = 60.0) -> JanitorRun:
        """Settle every ``unknown`` or stalled payment, and every unsettled refund.

        Only those older than ``min_age_s``: the age gives a slow PSP call time
        to finish (and a search index time to catch up) before we ask; Kill
        Bill's janitor waits the same way. Each item is settled on its own: a
        failure is logged and counted in the result, and the janitor goes on.
        """
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=min_age_s)
        with self.sessions() as session:
            stuck = session.execute(
                sa.select(Payment.merchant_id, Payment.id, Payment.status).where(
                    Payment.status.in_(("unknown", "processing")), Payment.updated_at <= cutoff
                )
            ).all()
            refunds = session.scalars(
                sa.select(Refund.id).where(
                    Refund.status.in_(("pending", "unknown")), Refund.updated_at <= cutoff
                )
            ).all()
        run = JanitorRun()
        for merchant_id, payment_id, status in stuck:
            try:
                settle = self.resolve_unknown if status == "unknown" else self.settle_stalled
                run.payments.append(settle(merchant_id, payment_id))
            except Exception as exc:  # isolate: one bad payment must not block the rest
                log.exception("janitor could not settle payment %s", payment_id)
                run.failures.append((payment_id, f"{type(exc).__name__}: {exc}"))
        for refund_id in refunds:
            try:
                run.refunds.append(self.resolve_refund(refund_id))
            except Exception as exc:
                log.exception("janitor could not settle refund %s", refund_id)
                run.failures.append((refund_id, f"{type(exc).__name__}: {exc}"))
        return run

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

    def psp_view(self, intent_id: str) -> PspView:
        """The PSP's current truth about an intent: its charge, fee and (if any) refunds.

        Network calls only: callers fetch this *before* opening a transaction.
        """
        intent = self.psp.retrieve_expanded(intent_id)
        charge = intent.get("latest_charge")
        refunded = isinstance(charge, Mapping) and int(charge.get("amount_refunded") or 0) > 0
        refunds = self.psp.list_refunds(intent_id) if refunded else []
        return view_of(intent, refunds)

    # -- steps ----------------------------------------------------------------------

    def _screen(
        self, payment: Payment, command: CreatePayment, challenge: bool, *, fresh: bool
    ) -> bool:
        """Run the fraud rules once per payment, durably; returns the 3DS choice for the PSP.

        Screening is recorded as a ``PaymentScreened`` event, and a payment is
        screened until that event exists. Whether the row is new does not
        decide it: a first attempt that died after its row committed (the
        ``payment_created`` crash point) must not send its retry to the PSP
        unscreened. The event is committed *before* the PSP call, in its own
        transaction, because it carries the 3DS choice: once the PSP has seen
        the payment's key, every later call (a retry, a janitor's re-drive)
        must send the same parameters, and a second screening could decide
        differently.

        Outcomes:

        * ``allow``: the PSP is asked as the merchant asked (3DS only if the
          `ThreeDSPolicy` challenges the merchant's risk score).
        * ``review``: 3DS is requested. The issuer's challenge is a step-up
          that needs no analyst and keeps the customer at checkout; the
          payment ends ``requires_action`` until the cardholder authenticates.
        * ``block``: ``PaymentScreened`` and ``PaymentFailed`` are written in
          one transaction, and `FraudBlocked` (402) is raised. The PSP is never
          called.

        If the rules cannot run (Redis unreachable), `FraudScreeningUnavailable`
        (503) propagates: nothing is written, the payment stays ``processing``,
        and the client's retry with the same key screens it. With the rules
        switched off (``FRAUD_RULES=off``), nothing is recorded and the
        policy's choice stands.
        """
        recorded = None if fresh else self._screening(payment.id)
        if recorded is not None:  # screened by an earlier attempt: repeat its choice
            return bool(recorded.get("three_d_secure", challenge))
        if self.fraud is None:
            return challenge
        verdict = self.fraud.check(
            Attempt(
                merchant_id=payment.merchant_id,
                card_fingerprint=card_fingerprint(command.payment_method),
                amount_minor=command.amount.amount_minor,
                ip=command.client_ip,
                customer_id=command.metadata.get("customer_id"),
            )
        )
        blocked = verdict.decision is Decision.BLOCK
        three_d_secure = not blocked and (challenge or verdict.decision is Decision.REVIEW)
        screened = {
            "decision": verdict.decision.value,
            "rule": verdict.rule,
            "value": verdict.value,
            "three_d_secure": three_d_secure,
            "values": dict(verdict.values or {}),
        }
        if blocked:
            failed = {"code": "fraud_blocked", "rule": verdict.rule, "value": verdict.value}
            self._record(payment.id, [(ps.SCREENED, screened), (ps.FAILED, failed)])
            raise FraudBlocked(verdict)
        self._record(payment.id, [(ps.SCREENED, screened)])
        return three_d_secure

    def _screening(self, payment_id: str) -> dict[str, Any] | None:
        """The ``PaymentScreened`` event's data, if the payment was screened.

        One lookup on the ``(payment_id, version)`` index, made only on a
        retry: a payment whose row this request created cannot have one yet.
        """
        with self.sessions() as session:
            data = session.scalar(
                sa.select(PaymentEvent.data)
                .where(PaymentEvent.payment_id == payment_id, PaymentEvent.type == ps.SCREENED)
                .limit(1)
            )
        return None if data is None else dict(data)

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
                stored, sent = existing.request_fingerprint, command.fingerprint
                if stored and sent and stored != sent:
                    raise KeyReusedWithOtherRequest(
                        "this Idempotency-Key was already used with a different request body "
                        f"(payment {existing.id}); use a new key for a new request"
                    )
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
                request_fingerprint=command.fingerprint,
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

    def _reserve_refund(
        self, payment: Payment, refund_id: str, amount: Money | None
    ) -> tuple[Refund, bool]:
        """The refund's row, and whether this call created it."""
        with unit_of_work(self.sessions) as session:
            row = session.get(Refund, refund_id)
            if row is not None:
                if row.payment_id != payment.id or (
                    amount is not None and amount.amount_minor != row.amount_minor
                ):
                    raise KeyReusedWithOtherRequest(
                        f"this Idempotency-Key already named refund {refund_id} of "
                        f"{Money(row.amount_minor, row.currency)} on {row.payment_id}; "
                        "use a new key for a new refund"
                    )
                if row.status == "failed":  # a retry of a refund that never happened: again
                    row.status, row.failure_code = "pending", None
                return row, False
            # Take the payment row's write lock *before* reading what is left: a row lock
            # on PostgreSQL, the database write lock on SQLite (whose reads before a
            # write are outside any transaction, and which ignores FOR UPDATE). Two
            # concurrent reservations then see each other's refunds.
            session.execute(
                sa.update(Payment).where(Payment.id == payment.id).values(updated_at=_utcnow())
            )
            fresh = session.get_one(Payment, payment.id, populate_existing=True)
            if fresh.status not in ("succeeded", "partially_refunded"):
                raise ps.InvalidTransition(
                    f"payment {fresh.id} is {fresh.status}; only captured payments can be refunded",
                    status=fresh.status,
                )
            in_flight = session.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(Refund.amount_minor), 0)).where(
                    Refund.payment_id == fresh.id, Refund.status.in_(("pending", "unknown"))
                )
            )
            remaining = fresh.amount_captured - fresh.amount_refunded - int(in_flight or 0)
            value = Money(remaining, fresh.currency) if amount is None else amount
            if value.currency != fresh.currency or not 0 < value.amount_minor <= remaining:
                raise RefundTooLarge(
                    f"refund of {value} is more than the {Money(max(remaining, 0), fresh.currency)}"
                    f" left to refund on {fresh.id} (refunds in flight count)",
                    payment_id=fresh.id,
                )
            row = Refund(
                id=refund_id,
                payment_id=fresh.id,
                merchant_id=fresh.merchant_id,
                amount_minor=value.amount_minor,
                currency=fresh.currency,
                status="pending",
            )
            session.add(row)
            return row, True

    def _set_refund_status(
        self, refund_id: str, status: str, code: str | None, only_from: tuple[str, ...]
    ) -> None:
        """Compare and set: move the row to ``status`` only from one of ``only_from``.

        Two writers race on a refund row: the API's retry and the janitor, each
        with what it saw a moment ago. A plain write would let the janitor's
        "not sent" overwrite the API's "unknown", releasing money that may be
        on its way to the customer. A booked refund is never in ``only_from``.
        """
        with unit_of_work(self.sessions) as session:
            session.execute(
                sa.update(Refund)
                .where(Refund.id == refund_id, Refund.status.in_(only_from))
                .values(status=status, failure_code=code, updated_at=_utcnow())
            )

    def _book_refund(self, payment_id: str, refund: PspRefund) -> Payment:
        """Book one PSP refund, unless it is booked already (the webhook got there first)."""
        data = {
            "amount": refund.amount,
            "refund_id": refund.refund_id or refund.id,
            "psp_refund_id": refund.id,
            "psp_created": refund.created,
        }
        for _attempt in range(3):
            try:
                with unit_of_work(self.sessions) as session:
                    payment = session.get_one(Payment, payment_id)
                    booked = booked_refund_ids(session, payment_id)
                    if refund.id not in booked:
                        self.apply_events(session, payment, [(ps.REFUNDED, data)], booked)
                    return payment
            except IntegrityError as exc:  # the webhook booked it (or another event) concurrently
                _raise_if_broken_books(exc)
                continue
        raise PaymentBusy(f"payment {payment_id} kept changing while booking refund {refund.id}")

    def _converge(self, payment_id: str, view: PspView) -> Payment:
        """Apply whatever brings the payment up to ``view``; nothing if it is there already."""
        for _attempt in range(3):
            try:
                with unit_of_work(self.sessions) as session:
                    payment = session.get_one(Payment, payment_id)
                    booked = booked_refund_ids(session, payment_id)
                    missing = events_to_reach(state_of(payment, booked), view)
                    if missing:
                        self.apply_events(session, payment, missing, booked)
                    return payment
            except IntegrityError as exc:
                _raise_if_broken_books(exc)
                continue
        raise PaymentBusy(f"payment {payment_id} kept changing; retry")

    def _events_from_intent(self, intent: stripe.PaymentIntent) -> list[tuple[str, dict[str, Any]]]:
        charge = intent.latest_charge if isinstance(intent.latest_charge, stripe.Charge) else None
        found = charge.balance_transaction if charge is not None else None
        txn = found if isinstance(found, stripe.BalanceTransaction) else None
        fee = txn.fee if txn is not None else None
        base = {"psp_intent_id": intent.id}
        if intent.status == "succeeded":
            booked = {
                "amount": intent.amount_received,
                "fee": fee,
                "psp_charge_id": charge.id if charge is not None else None,
                "psp_created": txn.created if txn is not None else None,
                "psp_available_on": txn.available_on if txn is not None else None,
            }
            return [(ps.CAPTURED, {**base, **booked})]
        if intent.status == "requires_capture":
            return [(ps.AUTHORIZED, {**base, "amount_capturable": intent.amount_capturable})]
        if intent.status == "requires_action":  # 3DS: the customer must authenticate first
            return [(ps.ACTION_REQUIRED, base)]
        if intent.status == "canceled":
            return [(ps.CANCELED, base)]
        error = intent.last_payment_error
        if intent.status == "requires_payment_method" and error is not None:
            code = getattr(error, "code", None) or "card_declined"
            return [
                (
                    ps.FAILED,
                    {**base, "code": code, "decline_code": getattr(error, "decline_code", None)},
                )
            ]
        # processing, requires_confirmation, ...: the PSP has not finished. Recording a
        # failure here would be final, and the success that follows would never be booked;
        # record nothing, and let the webhook (or the janitor) bring the final answer.
        return []

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
        return self._converge(payment_id, view_of(intent.to_dict()))

    def apply_events(
        self,
        session: Session,
        payment: Payment,
        events: list[tuple[str, dict[str, Any]]],
        refund_ids: frozenset[str] | None = None,
    ) -> None:
        """State, events, ledger postings and outbox rows for ``events``, in one transaction.

        All four are written together or not at all: that is the transactional
        outbox, and it is why a crash can never leave a state change that was
        not announced, or an announcement of a change that did not happen.
        ``refund_ids`` are the PSP refunds already booked (read here if a
        refund is among ``events`` and the caller did not).
        """
        if refund_ids is None and any(kind == ps.REFUNDED for kind, _ in events):
            refund_ids = booked_refund_ids(session, payment.id)
        state = state_of(payment, refund_ids or frozenset())
        ledger = Ledger(SqlJournalStore(session))
        booking = Booking(payment.id, payment.merchant_id, payment.currency)
        for event_type, data in events:
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
            post_event(ledger, booking, state, event_type, data)
            if event_type == ps.REFUNDED:
                _mark_refund_booked(session, payment, data)
        payment.status = state.status
        payment.amount_captured = state.amount_captured
        payment.amount_refunded = state.amount_refunded
        payment.psp_intent_id = state.psp_intent_id
        payment.failure_code = state.failure_code
        payment.fee_minor = state.fee
        payment.version = state.version
        session.flush()


def _mark_refund_booked(session: Session, payment: Payment, data: Mapping[str, Any]) -> None:
    """The ``refunds`` row of a booked refund: ours (by id), or a new one for the PSP's own.

    A row already booked under *another* PSP refund keeps it: a second PSP
    refund carrying the same id of ours (a re-drive after the PSP forgot its
    key) is money moved twice, and gets a row of its own, never an overwrite.
    """
    psp_id = data.get("psp_refund_id")
    row = session.get(Refund, str(data["refund_id"]))
    if row is not None and (
        row.payment_id != payment.id or (row.psp_refund_id and row.psp_refund_id != psp_id)
    ):
        row = None
    if row is None and psp_id:
        row = session.scalar(sa.select(Refund).where(Refund.psp_refund_id == psp_id))
    if row is None:  # made at the PSP directly (a dashboard refund), or a second one: record it
        row = Refund(
            id=str(psp_id or data["refund_id"]),
            payment_id=payment.id,
            merchant_id=payment.merchant_id,
            amount_minor=int(data["amount"]),
            currency=payment.currency,
            status="succeeded",
        )
        session.add(row)
    row.status, row.psp_refund_id, row.failure_code = "succeeded", psp_id, None

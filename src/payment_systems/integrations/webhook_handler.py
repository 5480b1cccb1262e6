"""Receiving the PSP's webhooks: verify, deduplicate, and apply once, never backwards.

``POST /v1/webhooks/psp`` runs `WebhookHandler.handle_stripe`:

1. **Verify before parsing.** The signature covers the raw bytes; a bad or
   stale one is a 400, logged without the secret or the payload.
2. **Deduplicate.** The event id goes into ``webhook_inbox`` (primary key)
   *in the same transaction* as the state change it causes. A duplicate is
   acknowledged with 2xx and changes nothing; a crash rolls back both, so the
   PSP's retry applies the event exactly once.
3. **Never backwards.** The event's object is read as a lower bound on the
   payment's progress (`payment_systems.core.psp_sync`). An event that would
   not move the payment forward (a late ``processing``, a duplicate) is
   recorded as ``stale`` and ignored.
4. **Disputes** (``charge.dispute.*``) go to `DisputeService.sync`, which
   re-reads the dispute and walks its state machine to the PSP's status.
5. **Re-fetch when it matters.** An event that *would* move the payment is
   ambiguous on its own: it may be old, and a charge event does not carry
   the PaymentIntent's state, the fee, or which refunds make up its refunded
   total. Following Stripe's advice, we fetch the PaymentIntent (and its
   refunds, each booked by its own id) and apply the PSP's current truth.
6. **No network call inside a transaction.** The fetch happens between a
   read and a short write transaction that re-checks everything.

The signing and verification functions are re-exported here so readers can
copy them from one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.chargebacks.service import DisputeService
from payment_systems.core.payments import PaymentService, booked_refund_ids, state_of
from payment_systems.core.psp_sync import PspView, events_to_reach, view_of, would_advance
from payment_systems.database.models import Payment, WebhookInbox
from payment_systems.database.session import unit_of_work
from payment_systems.integrations.webhook_signatures import (
    SignatureVerificationError,
    sign_standard,
    sign_stripe,
    verify_standard,
    verify_stripe,
)

__all__ = [
    "SignatureVerificationError",
    "WebhookHandler",
    "WebhookResult",
    "sign_standard",
    "sign_stripe",
    "verify_standard",
    "verify_stripe",
]

log = logging.getLogger(__name__)
PAYMENT_EVENTS = (
    "payment_intent.",
    "charge.succeeded",
    "charge.captured",
    "charge.refunded",
    "charge.refund.updated",  # a pending refund that later succeeded (or failed)
    "refund.",
)


def intent_of(obj: Mapping[str, Any]) -> Any:
    """The PaymentIntent id a charge, a refund or an intent belongs to."""
    return obj.get("payment_intent") if obj.get("object") in ("charge", "refund") else obj.get("id")


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What happened to one delivery."""

    event_id: str
    outcome: str  # applied | stale | duplicate | ignored
    payment_id: str | None = None
    refetched: bool = False
    created: int = 0  # when the PSP created the event (for webhook lag)


class WebhookHandler:
    """Applies PSP events to payments through the payment service's unit of work."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        service: PaymentService,
        secrets: Sequence[str] = (),
        *,
        tolerance_s: int = 300,
        crash_point: Callable[[str], None] = lambda _point: None,
        disputes: DisputeService | None = None,
    ) -> None:
        self.sessions = sessions
        self.service = service
        self.disputes = disputes
        self.secrets = list(secrets)
        self.tolerance_s = tolerance_s
        self.crash_point = crash_point  # chaos tests: fail after applying, before commit

    def handle_stripe(
        self, payload: bytes, signature: str, now: float | None = None
    ) -> WebhookResult:
        """Verify a ``Stripe-Signature`` delivery, then apply it."""
        if not self.secrets:
            raise SignatureVerificationError(
                "no webhook secret is configured (PSP_WEBHOOK_SECRETS); refusing unsigned events"
            )
        try:
            verify_stripe(self.secrets, payload, signature, self.tolerance_s, now)
        except SignatureVerificationError as exc:
            log.warning("rejected a webhook: %s (%d bytes)", exc.message, len(payload))
            raise
        return self.apply(json.loads(payload))

    def apply(self, event: Mapping[str, Any]) -> WebhookResult:
        """Apply a verified event exactly once (the inbox) and never backwards (psp_sync).

        A unique-constraint failure means someone else changed the same rows
        first: the same event delivered twice at once (the inbox), or our own
        API recording the same capture a moment earlier (the payment's event
        version, the journal id). Retrying once in a fresh transaction sees
        their committed work and settles it as ``duplicate`` or ``stale``. A
        second failure is raised, never acknowledged: a 500 makes the PSP
        deliver again, where a 2xx would lose the event.
        """
        for attempt in (1, 2):
            try:
                return self._apply_once(event)
            except IntegrityError:
                with self.sessions() as session:
                    if session.get(WebhookInbox, str(event["id"])) is not None:
                        return WebhookResult(str(event["id"]), "duplicate")
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply_once(self, event: Mapping[str, Any]) -> WebhookResult:
        """Read, then fetch from the PSP, then write: never a network call inside a transaction.

        A PSP call inside the transaction would pin a pooled connection (and,
        on PostgreSQL, row locks) for as long as the PSP takes: up to its whole
        retry budget. A slow PSP would then exhaust the pool and turn every
        API request into a 503. So the PSP's truth is fetched first, and the
        transaction that applies it re-reads the payment and re-checks the
        inbox, because anything may have changed while we were away.
        """
        event_id, event_type = str(event["id"]), str(event["type"])
        created = int(event.get("created") or 0)
        obj: Mapping[str, Any] = event["data"]["object"]
        # 1. Read (no transaction held): a duplicate, or a stale event, costs no PSP call.
        with self.sessions() as session:
            if session.get(WebhookInbox, event_id) is not None:
                return WebhookResult(event_id, "duplicate")
            payment = (
                self._payment_for(session, obj) if event_type.startswith(PAYMENT_EVENTS) else None
            )
            payment_id = payment.id if payment is not None else None
            # A refund object says nothing about the payment's state by itself (and a
            # refund that succeeded later may be the only event we get): always look.
            advance = payment is not None and (
                obj.get("object") == "refund"
                or would_advance(
                    state_of(payment, booked_refund_ids(session, payment.id)), view_of(obj)
                )
            )
        # 2. Fetch the PSP's current truth, outside any transaction.
        view: PspView | None = None
        dispute: dict[str, Any] | None = None
        if advance and payment is not None:
            view = self.service.psp_view(str(intent_of(obj) or payment.psp_intent_id))
        elif payment is None and event_type.startswith("charge.dispute.") and self.disputes:
            # Like payments: the event says "look", the PSP says what is true now.
            dispute = self.disputes.gateway.retrieve(str(obj["id"]))
        # 3. Write: re-check and apply in one short transaction.
        with unit_of_work(self.sessions) as session:
            if session.get(WebhookInbox, event_id) is not None:
                return WebhookResult(event_id, "duplicate")
            outcome, refetched = "ignored", view is not None or dispute is not None
            if payment_id is not None:
                outcome = "stale"
                if view is not None:
                    current = session.get_one(Payment, payment_id)
                    booked = booked_refund_ids(session, payment_id)
                    events = events_to_reach(state_of(current, booked), view)
                    if events:
                        self.service.apply_events(session, current, events, booked)
                        outcome = "applied"
            elif dispute is not None and self.disputes is not None:
                outcome, payment_id = self.disputes.sync(session, dispute)
            session.add(
                WebhookInbox(
                    event_id=event_id,
                    type=event_type,
                    payment_id=payment_id,
                    outcome=outcome,
                    event_created=created,
                )
            )
            self.crash_point("before_commit")
            return WebhookResult(event_id, outcome, payment_id, refetched, created)

    @staticmethod
    def _payment_for(session: Session, obj: Mapping[str, Any]) -> Payment | None:
        intent_id = intent_of(obj)
        payment = session.scalar(sa.select(Payment).where(Payment.psp_intent_id == intent_id))
        if payment is not None:
            return payment
        metadata = obj.get("metadata") or {}
        payment_id, merchant_id = metadata.get("payment_id"), metadata.get("merchant_id")
        if not payment_id or not merchant_id:
            return None
        return session.scalar(
            sa.select(Payment).where(Payment.id == payment_id, Payment.merchant_id == merchant_id)
        )

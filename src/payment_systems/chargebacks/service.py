"""Disputes in our system: follow the PSP's truth, book every step, answer each one.

`DisputeService.sync` is what a ``charge.dispute.*`` webhook runs (inside
the webhook's transaction, so the inbox row and the dispute change commit
together). It never trusts the event body: it re-reads the dispute from the
PSP, then walks our state machine from where we are to where the PSP is,
one legal step at a time. Missed, duplicated or reordered webhooks
therefore cannot skip a ledger posting or apply one twice: each step is a
journal with a deterministic id, a versioned `DisputeEvent` and an outbox
message.

`DisputeService.respond` is the decision: assemble evidence from our
records, estimate the win rate from our history of similar disputes, and
fight (submit through the stripe SDK) or accept, whichever has the higher
expected value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.chargebacks import lifecycle as lc
from payment_systems.chargebacks.decision import (
    STRENGTH_PRIORS,
    FeeModel,
    FightDecision,
    estimated_win_rate,
    fight_or_accept,
)
from payment_systems.chargebacks.evidence import Evidence, Policies, assemble, records_for
from payment_systems.core.ledger import Ledger
from payment_systems.database.ledger_store import SqlJournalStore
from payment_systems.database.models import DisputeEvent, DisputeRecord, OutboxMessage, Payment
from payment_systems.database.session import unit_of_work
from payment_systems.errors import PaymentSystemsError
from payment_systems.integrations.psp_disputes import DisputeGateway
from payment_systems.money import Money, Rounding
from payment_systems.patterns.outbox import partition_of


class UnknownDispute(PaymentSystemsError):
    code = "dispute_not_found"
    http_status = 404


def path_between(start: lc.DisputeStatus, goal: lc.DisputeStatus) -> list[lc.DisputeStatus]:
    """The shortest list of legal moves from ``start`` to ``goal`` ([] if none or equal).

    Examples:
        >>> S = lc.DisputeStatus
        >>> [s.value for s in path_between(S.NEEDS_RESPONSE, S.WON)]
        ['under_review', 'won']
        >>> path_between(S.WON, S.UNDER_REVIEW)  # never backwards
        []
    """
    previous: dict[lc.DisputeStatus, lc.DisputeStatus] = {}
    queue = deque([start])
    while queue:
        status = queue.popleft()
        if status is goal and status is not start:
            path = [status]
            while previous[path[-1]] is not start:
                path.append(previous[path[-1]])
            return path[::-1]
        for nxt in sorted(lc.TRANSITIONS[status]):
            if nxt not in previous and nxt is not start:
                previous[nxt] = status
                queue.append(nxt)
    return []


def _opening_status(psp_status: str) -> lc.DisputeStatus:
    if psp_status.startswith("warning"):
        return lc.DisputeStatus.WARNING_NEEDS_RESPONSE
    if psp_status == "prevented":
        return lc.DisputeStatus.PREVENTED
    return lc.DisputeStatus.NEEDS_RESPONSE


def _to_domain(record: DisputeRecord) -> lc.Dispute:
    return lc.Dispute(
        record.id,
        record.payment_id,
        Money(record.amount_minor, record.currency),
        record.reason,
        lc.DisputeStatus(record.status),
        record.due_by,
        record.evidence_submitted,
        record.funds_withdrawn,
    )


@dataclass(frozen=True, slots=True)
class Response:
    """What we did about one dispute, and why."""

    dispute_id: str
    evidence: Evidence
    decision: FightDecision
    action: str  # fought | accepted
    status: str  # the dispute's status after the action


class DisputeService:
    """Keeps our disputes in step with the PSP's, and answers them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        gateway: DisputeGateway,
        *,
        fees: lc.DisputeFees | None = None,
        policies: Policies | None = None,
        cost_to_fight: Money = Money(2_500, "USD"),
        fee_model: FeeModel = FeeModel.COUNTER_FEE,
    ) -> None:
        self.sessions = sessions
        self.gateway = gateway
        self.fees = fees or lc.DisputeFees()
        self.policies = policies or Policies()
        self.cost_to_fight = cost_to_fight
        self.fee_model = fee_model

    # -- following the PSP ------------------------------------------------------------

    def sync(self, session: Session, psp_dispute: Mapping[str, Any]) -> tuple[str, str | None]:
        """Bring our record up to the PSP's dispute; returns (outcome, payment id)."""
        payment = session.scalar(
            sa.select(Payment).where(Payment.psp_intent_id == psp_dispute.get("payment_intent"))
        )
        if payment is None:
            return "ignored", None
        goal = lc.DisputeStatus(psp_dispute["status"])
        due_by = int(psp_dispute["evidence_details"]["due_by"])
        record = session.get(DisputeRecord, psp_dispute["id"], with_for_update=True)
        opened = record is None
        if record is None:
            amount = Money(int(psp_dispute["amount"]), str(psp_dispute["currency"]).upper())
            dispute, moves = lc.open_dispute(
                str(psp_dispute["id"]), payment.id, amount, str(psp_dispute["reason"]),
                _opening_status(str(psp_dispute["status"])), due_by, self.fees,
            )  # fmt: skip
            record = DisputeRecord(
                id=dispute.id, payment_id=payment.id, merchant_id=payment.merchant_id,
                amount_minor=amount.amount_minor, currency=amount.currency,
                reason=dispute.reason, status=dispute.status.value, due_by=due_by, version=0,
            )  # fmt: skip
            session.add(record)
            session.flush()  # the row exists before its events refer to it
            self._record_step(session, record, dispute, moves)
        steps = path_between(lc.DisputeStatus(record.status), goal)
        if not steps:
            return ("applied" if opened else "stale"), payment.id
        for status in steps:
            # The PSP accepted what it accepted: a submission it took was on time.
            dispute, moves = lc.step(
                _to_domain(record), status, now=record.due_by, fees=self.fees, due_by=due_by
            )
            self._record_step(session, record, dispute, moves)
        return "applied", payment.id

    def sync_from_psp(self, dispute_id: str, evidence_strength: str | None = None) -> DisputeRecord:
        """Re-read one dispute from the PSP and apply it in its own transaction."""
        fresh = self.gateway.retrieve(dispute_id)
        with unit_of_work(self.sessions) as session:
            self.sync(session, fresh)
            record = session.get(DisputeRecord, dispute_id)
            if record is None:
                raise UnknownDispute(f"dispute {dispute_id} is not on one of our payments")
            if evidence_strength is not None:
                record.evidence_strength = evidence_strength
                session.flush()
            session.expunge(record)
            return record

    def _record_step(
        self, session: Session, record: DisputeRecord, dispute: lc.Dispute, moves: list[lc.Movement]
    ) -> None:
        record.version += 1
        record.status = dispute.status.value
        record.due_by = dispute.due_by
        record.evidence_submitted = dispute.evidence_submitted
        record.funds_withdrawn = dispute.funds_withdrawn
        event_type = f"dispute.{dispute.status.value}"
        data = {
            "dispute_id": record.id,
            "payment_id": record.payment_id,
            "merchant_id": record.merchant_id,
            "version": record.version,
            "status": dispute.status.value,
            "movements": [{"kind": m.kind, "amount": str(m.amount)} for m in moves],
        }
        session.add(DisputeEvent(dispute_id=record.id, version=record.version, type=event_type,
                                 data=data))  # fmt: skip
        session.add(
            OutboxMessage(
                event_id=f"{record.id}:{record.version}", aggregate_id=record.payment_id,
                partition=partition_of(record.payment_id), type=event_type, payload=data,
            )
        )  # fmt: skip
        if moves:
            Ledger(SqlJournalStore(session)).post(
                f"{record.id}:{record.version}",
                lc.journal_legs(moves),
                f"{event_type} ({', '.join(m.kind for m in moves)})",
                payment_id=record.payment_id,
            )
        session.flush()

    # -- answering ----------------------------------------------------------------------

    def recommend(self, dispute_id: str) -> tuple[Evidence, FightDecision]:
        """The evidence we would send and the expected value of sending it."""
        # The PSP is read before the transaction opens: a slow PSP must never hold a
        # pooled connection (and, on PostgreSQL, its snapshot) for the length of its call.
        with self.sessions() as session:
            found = session.get(DisputeRecord, dispute_id)
            if found is None:
                raise UnknownDispute(f"no dispute {dispute_id}; has its webhook arrived?")
            intent_id = session.get_one(Payment, found.payment_id).psp_intent_id
        intent = self.gateway.psp.retrieve_expanded(str(intent_id))
        with unit_of_work(self.sessions) as session:
            record = session.get_one(DisputeRecord, dispute_id)
            payment = session.get_one(Payment, record.payment_id)
            charge = intent.get("latest_charge") or {}
            evidence = assemble(record.reason, records_for(session, payment, charge, self.policies))
            won, lost = self._history(session, record, evidence.strength)
            amount = Money(record.amount_minor, record.currency)
        win_rate = estimated_win_rate(won, lost, STRENGTH_PRIORS[evidence.strength])
        fees = self.fees.in_currency(amount.currency)
        cost = Money.of(self.cost_to_fight.amount, amount.currency, rounding=Rounding.HALF_UP)
        fee = fees.counter_fee if self.fee_model is FeeModel.COUNTER_FEE else fees.dispute_fee
        return evidence, fight_or_accept(amount, win_rate, cost, fee, self.fee_model)

    def respond(self, dispute_id: str) -> Response:
        """Fight with assembled evidence, or accept, whichever is worth more."""
        evidence, decision = self.recommend(dispute_id)
        if decision.fight:
            self.gateway.submit_evidence(dispute_id, evidence.fields)
        else:
            self.gateway.accept(dispute_id)
        record = self.sync_from_psp(dispute_id, evidence.strength)
        action = "fought" if decision.fight else "accepted"
        return Response(dispute_id, evidence, decision, action, record.status)

    @staticmethod
    def _history(session: Session, record: DisputeRecord, strength: str) -> tuple[int, int]:
        rows = session.execute(
            sa.select(DisputeRecord.status, sa.func.count())
            .where(
                DisputeRecord.merchant_id == record.merchant_id,
                DisputeRecord.reason == record.reason,
                DisputeRecord.evidence_strength == strength,
                DisputeRecord.status.in_(("won", "lost")),
            )
            .group_by(DisputeRecord.status)
        ).all()
        counts = {status: int(n) for status, n in rows}
        return counts.get("won", 0), counts.get("lost", 0)

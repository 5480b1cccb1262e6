"""The dispute lifecycle as a pure state machine, with the money each step moves.

Stripe's eight statuses, and the only moves between them::

    warning_needs_response ─submit→ warning_under_review ─won→ warning_closed
       │  └─close→ warning_closed            └─lost→ needs_response (escalated)
       └─deadline→ needs_response (escalated)
    needs_response ─submit→ under_review ─→ won | lost
       ├─accept→ lost
       └─deadline→ lost
    prevented (terminal from the start: no chargeback will follow)

Why a state machine rather than a status column anyone may set: a dispute
moves money at each step, and the network's rules are strict. Evidence is
accepted exactly once; a response after ``due_by`` is ignored and the
dispute is lost; a closed dispute never reopens. Encoding the moves makes an
illegal one an exception at the call site instead of a wrong ledger.

`step` returns the new dispute and the `Movement`s the transition causes;
`journal_legs` turns them into balanced ledger legs. The database, the PSP
and the clock stay outside: callers pass ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from payment_systems.core.ledger import Leg, transfer
from payment_systems.errors import PaymentSystemsError
from payment_systems.money import Money, Rounding


class DisputeStatus(StrEnum):
    WARNING_NEEDS_RESPONSE = "warning_needs_response"
    WARNING_UNDER_REVIEW = "warning_under_review"
    WARNING_CLOSED = "warning_closed"
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"
    PREVENTED = "prevented"


S = DisputeStatus
TRANSITIONS: dict[DisputeStatus, frozenset[DisputeStatus]] = {
    S.WARNING_NEEDS_RESPONSE: frozenset(
        {S.WARNING_UNDER_REVIEW, S.WARNING_CLOSED, S.NEEDS_RESPONSE}
    ),
    S.WARNING_UNDER_REVIEW: frozenset({S.WARNING_CLOSED, S.NEEDS_RESPONSE}),
    S.NEEDS_RESPONSE: frozenset({S.UNDER_REVIEW, S.LOST}),
    S.UNDER_REVIEW: frozenset({S.WON, S.LOST}),
    S.WARNING_CLOSED: frozenset(),
    S.WON: frozenset(),
    S.LOST: frozenset(),
    S.PREVENTED: frozenset(),
}
OPENING = frozenset({S.WARNING_NEEDS_RESPONSE, S.NEEDS_RESPONSE, S.PREVENTED})
AWAITING_RESPONSE = frozenset({S.WARNING_NEEDS_RESPONSE, S.NEEDS_RESPONSE})
CLOSED = frozenset(status for status, moves in TRANSITIONS.items() if not moves)


class DisputeError(PaymentSystemsError):
    code = "dispute_error"
    http_status = 409


class IllegalDisputeTransition(DisputeError):
    code = "dispute_illegal_transition"


class EvidenceAlreadySubmitted(DisputeError):
    code = "dispute_evidence_already_submitted"


class ResponseDeadlinePassed(DisputeError):
    code = "dispute_response_deadline_passed"


@dataclass(frozen=True, slots=True)
class DisputeFees:
    """Stripe's US fees since June 2025: a dispute fee kept whatever happens, and a
    counter fee charged when evidence is submitted and refunded on a win."""

    dispute_fee: Money = Money(1_500, "USD")
    counter_fee: Money = Money(1_500, "USD")

    def in_currency(self, currency: str) -> DisputeFees:
        """The same face values in ``currency`` (the sandbox charges them unconverted)."""

        def same(fee: Money) -> Money:
            return Money.of(fee.amount, currency, rounding=Rounding.HALF_UP)

        return DisputeFees(same(self.dispute_fee), same(self.counter_fee))


@dataclass(frozen=True, slots=True)
class Movement:
    """Money a transition moves: ``kind`` is one of `MOVEMENT_ACCOUNTS`' keys."""

    kind: str
    amount: Money


# kind -> (debit, credit). Disputed funds are an asset while the network holds them;
# a loss turns them into an expense, a win turns them back into a PSP receivable.
MOVEMENT_ACCOUNTS: dict[str, tuple[str, str]] = {
    "withdrawal": ("disputed_funds", "psp_receivable"),
    "dispute_fee": ("dispute_fees", "psp_receivable"),
    "counter_fee": ("dispute_fees", "psp_receivable"),
    "reinstatement": ("psp_receivable", "disputed_funds"),
    "counter_fee_refund": ("psp_receivable", "dispute_fees"),
    "loss": ("dispute_losses", "disputed_funds"),
}


@dataclass(frozen=True, slots=True)
class Dispute:
    """What we know about one dispute. Immutable: `step` returns a new one."""

    id: str
    payment_id: str
    amount: Money
    reason: str
    status: DisputeStatus
    due_by: int
    evidence_submitted: bool = False
    funds_withdrawn: bool = False


def open_dispute(
    dispute_id: str, payment_id: str, amount: Money, reason: str, status: DisputeStatus,
    due_by: int, fees: DisputeFees,
) -> tuple[Dispute, list[Movement]]:  # fmt: skip
    """A new dispute in one of the `OPENING` statuses, and what opening it costs.

    Examples:
        >>> d, moves = open_dispute("dp_1", "pay_1", Money(7500, "USD"), "fraudulent",
        ...                         DisputeStatus.NEEDS_RESPONSE, 0, DisputeFees())
        >>> [(m.kind, str(m.amount)) for m in moves]
        [('withdrawal', '75.00 USD'), ('dispute_fee', '15.00 USD')]
    """
    if status not in OPENING:
        raise IllegalDisputeTransition(
            f"a dispute cannot open as {status.value}; it opens as one of "
            f"{', '.join(sorted(OPENING))}",
            status=status.value,
        )
    dispute = Dispute(dispute_id, payment_id, amount, reason, status, due_by)
    if status is S.NEEDS_RESPONSE:
        return _withdraw(dispute, fees)
    return dispute, []


def _withdraw(dispute: Dispute, fees: DisputeFees) -> tuple[Dispute, list[Movement]]:
    fee = fees.in_currency(dispute.amount.currency).dispute_fee
    moves = [Movement("withdrawal", dispute.amount), Movement("dispute_fee", fee)]
    return replace(dispute, funds_withdrawn=True), moves


def step(
    dispute: Dispute, to: DisputeStatus, *, now: int, fees: DisputeFees, due_by: int | None = None
) -> tuple[Dispute, list[Movement]]:
    """Move ``dispute`` to ``to`` at time ``now``; raise if the network would not.

    ``due_by`` is the new deadline when an inquiry escalates to a chargeback.

    Examples:
        >>> d, _ = open_dispute("dp_1", "pay_1", Money(7500, "USD"), "fraudulent",
        ...                     DisputeStatus.NEEDS_RESPONSE, 100, DisputeFees())
        >>> d, moves = step(d, DisputeStatus.UNDER_REVIEW, now=50, fees=DisputeFees())
        >>> d, moves = step(d, DisputeStatus.WON, now=90, fees=DisputeFees())
        >>> [(m.kind, str(m.amount)) for m in moves]
        [('reinstatement', '75.00 USD'), ('counter_fee_refund', '15.00 USD')]
    """
    if to not in TRANSITIONS[dispute.status]:
        raise IllegalDisputeTransition(
            f"dispute {dispute.id} is {dispute.status.value}; it cannot become {to.value}"
            + (" (a closed dispute never reopens)" if dispute.status in CLOSED else ""),
            status=dispute.status.value,
        )
    fees = fees.in_currency(dispute.amount.currency)
    if to in (S.UNDER_REVIEW, S.WARNING_UNDER_REVIEW):
        return _submit(dispute, to, now, fees)
    if to is S.NEEDS_RESPONSE:  # an inquiry escalates: a fresh deadline, funds withdrawn
        escalated = replace(
            dispute, status=to, evidence_submitted=False, due_by=due_by or dispute.due_by
        )
        return _withdraw(escalated, fees)
    moved = replace(dispute, status=to)
    if to is S.WON:
        return moved, [
            Movement("reinstatement", dispute.amount),
            Movement("counter_fee_refund", fees.counter_fee),
        ]
    if to is S.LOST:
        return moved, [Movement("loss", dispute.amount)]
    return moved, []


def _submit(
    dispute: Dispute, to: DisputeStatus, now: int, fees: DisputeFees
) -> tuple[Dispute, list[Movement]]:
    if dispute.evidence_submitted:
        raise EvidenceAlreadySubmitted(
            f"evidence for dispute {dispute.id} was already submitted; networks accept it once"
        )
    if now > dispute.due_by:
        raise ResponseDeadlinePassed(
            f"dispute {dispute.id} was due by {dispute.due_by} (now {now}); the issuer will "
            "not read late evidence, so the dispute is lost"
        )
    submitted = replace(dispute, status=to, evidence_submitted=True)
    if to is S.UNDER_REVIEW:
        return submitted, [Movement("counter_fee", fees.counter_fee)]
    return submitted, []  # answering an inquiry is free


def expire(dispute: Dispute, *, now: int, fees: DisputeFees) -> tuple[Dispute, list[Movement]]:
    """What the deadline does: an unanswered chargeback is lost; an inquiry escalates."""
    if dispute.status not in AWAITING_RESPONSE or now <= dispute.due_by:
        return dispute, []
    if dispute.status is S.NEEDS_RESPONSE:
        return step(dispute, S.LOST, now=now, fees=fees)
    return step(dispute, S.NEEDS_RESPONSE, now=now, fees=fees)


def journal_legs(movements: list[Movement]) -> list[Leg]:
    """Balanced ledger legs for ``movements`` (two per movement)."""
    legs: list[Leg] = []
    for movement in movements:
        debit, credit = MOVEMENT_ACCOUNTS[movement.kind]
        legs.extend(transfer(debit, credit, movement.amount))
    return legs

"""Disputes: opened by the card network, answered with evidence once, then decided.

Lifecycle (Stripe's statuses)::

    inquiry:    warning_needs_response ─submit→ warning_under_review ─won→ warning_closed
                       │ (due_by passes, or the review is lost)
                       └────────────── escalates to a chargeback ──────────┐
    chargeback: needs_response ─submit evidence→ under_review ─(review)→ won | lost
                               ─(due_by passes)→ lost   ─close (accept)→ lost
    prevented:  a fraud claim on a 3DS-authenticated charge (liability shift),
                or a claim on a charge already fully refunded: no money moves

Money follows Stripe's fee model since 2025: opening a chargeback withdraws
the amount and a dispute fee that is never returned; submitting evidence
costs a counter fee; a win returns the amount and the counter fee. An
inquiry moves no money until it escalates.

The decision rule is documented and deterministic, so tests, the evidence
assembler and the chargeback pages can reason about it:

1. Stripe's test-mode convention wins first: ``uncategorized_text`` equal to
   ``winning_evidence`` is won, ``losing_evidence`` is lost.
2. Each reason code may demand one of a few fields (`REQUIRED_BY_REASON`):
   a "product not received" claim without shipping proof is lost however
   much else is sent.
3. Otherwise each piece of evidence scores points (`EVIDENCE_WEIGHTS`); the
   merchant wins with `WIN_THRESHOLD` points or more. Proof the cardholder
   was involved (delivery tracking, signatures, activity logs, their own
   messages, prior undisputed payments) weighs most, because that is what
   issuers accept.
"""

from __future__ import annotations

from typing import Any

from payment_systems.integrations.psp_sandbox.balance import DAY_S, dispute_balance_transactions
from payment_systems.integrations.psp_sandbox.context import Ctx
from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.forms import get_bool, get_metadata
from payment_systems.integrations.psp_sandbox.payment_intents import reject_unknown
from payment_systems.integrations.psp_sandbox.store import Obj

EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip
EVIDENCE_WEIGHTS = {
    "shipping_tracking_number": 2,
    "duplicate_charge_explanation": 2,
    "cancellation_rebuttal": 2,
    "refund_refusal_explanation": 1,
    "cancellation_policy": 1,
    "shipping_documentation": 2,
    "customer_signature": 2,
    "access_activity_log": 2,
    "customer_communication": 2,
    "service_documentation": 2,
    "receipt": 1,
    "customer_purchase_ip": 1,
    "billing_address": 1,
    "product_description": 1,
    "refund_policy": 1,
}
WIN_THRESHOLD = 5
REQUIRED_BY_REASON: dict[str, tuple[str, ...]] = {
    "product_not_received": ("shipping_tracking_number", "shipping_documentation"),
    "duplicate": ("duplicate_charge_explanation", "duplicate_charge_documentation"),
    "subscription_canceled": ("cancellation_policy", "cancellation_rebuttal"),
    "credit_not_processed": ("refund_policy", "refund_refusal_explanation"),
}
RESPONSE_WINDOW_S = 7 * DAY_S
REVIEW_PERIOD_S = DAY_S  # networks take 60-75 days; the sandbox clock is patient, readers less so


def decide(evidence: dict[str, Any], reason: str = "general") -> tuple[str, int]:
    """The outcome of submitted evidence for a dispute's ``reason``, and its score.

    Examples:
        >>> decide({"shipping_tracking_number": "1Z999", "customer_signature": "sig.png",
        ...         "receipt": "r.pdf"})
        ('won', 5)
        >>> decide({"receipt": "r.pdf"})
        ('lost', 1)
        >>> decide({"uncategorized_text": "winning_evidence"})
        ('won', 0)
        >>> decide({"customer_signature": "s", "access_activity_log": "l", "receipt": "r"},
        ...        reason="product_not_received")  # strong, but no shipping proof
        ('lost', 5)
    """
    text = evidence.get("uncategorized_text")
    score = sum(w for name, w in EVIDENCE_WEIGHTS.items() if evidence.get(name))
    if text == "winning_evidence":
        return "won", score
    if text == "losing_evidence":
        return "lost", score
    required = REQUIRED_BY_REASON.get(reason, ())
    if required and not any(evidence.get(name) for name in required):
        return "lost", score
    return ("won" if score >= WIN_THRESHOLD else "lost"), score


def open_dispute(
    ctx: Ctx, charge: Obj, reason: str = "fraudulent", *, inquiry: bool = False
) -> Obj:
    """The cardholder's bank disputes ``charge``.

    A chargeback withdraws the amount and the dispute fee at once; an inquiry
    moves no money yet; a prevented claim never will (see the module notes).
    """
    amount = charge["amount_captured"] - charge["amount_refunded"]
    secure = (charge["payment_method_details"]["card"].get("three_d_secure") or {}).get("result")
    if amount <= 0 or (reason == "fraudulent" and secure == "authenticated"):
        status = "prevented"
    else:
        status = "warning_needs_response" if inquiry else "needs_response"
    dispute: Obj = {
        "id": ctx.new_id("dp"),
        "object": "dispute",
        "amount": max(amount, 0) or charge["amount_captured"],
        "balance_transactions": [],
        "charge": charge["id"],
        "created": ctx.now,
        "currency": charge["currency"],
        "evidence": dict.fromkeys(EVIDENCE_FIELDS),
        "evidence_details": _fresh_details(ctx),
        "is_charge_refundable": status.startswith("warning"),
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": status,
    }
    ctx.insert(dispute, parent=charge["id"])
    charge["disputed"] = True
    ctx.save(charge)
    ctx.emit("charge.dispute.created", dispute)
    if status == "needs_response":
        _withdraw(ctx, dispute)
    return dispute


def _fresh_details(ctx: Ctx) -> dict[str, Any]:
    return {
        "due_by": ctx.now + RESPONSE_WINDOW_S,
        "has_evidence": False,
        "past_due": False,
        "submission_count": 0,
    }


def _withdraw(ctx: Ctx, dispute: Obj) -> None:
    dispute["balance_transactions"].append(
        dispute_balance_transactions(ctx, dispute, step="withdrawal")
    )
    ctx.save(dispute)
    ctx.emit("charge.dispute.funds_withdrawn", dispute)


def _escalate(ctx: Ctx, dispute: Obj) -> None:
    """An inquiry the issuer was not satisfied with becomes a chargeback."""
    dispute.update(
        status="needs_response",
        evidence=dict.fromkeys(EVIDENCE_FIELDS),
        evidence_details=_fresh_details(ctx),
        is_charge_refundable=False,
    )
    dispute.pop("submitted_at", None)
    ctx.emit("charge.dispute.updated", dispute)
    _withdraw(ctx, dispute)


def get(ctx: Ctx, dispute_id: str) -> Obj:
    """``GET /v1/disputes/{id}``."""
    dispute = ctx.get("dispute", dispute_id)
    if dispute is None:
        raise NotFound("dispute", dispute_id, "dispute")
    return dispute


def update(ctx: Ctx, dispute_id: str, params: dict[str, Any]) -> Obj:
    """``POST /v1/disputes/{id}``: stage evidence, and ``submit=true`` to send it (once)."""
    reject_unknown(params, {"evidence", "submit", "metadata", "expand"})
    dispute = get(ctx, dispute_id)
    if dispute["status"] not in ("needs_response", "warning_needs_response"):
        raise InvalidRequest(
            f"This dispute is in status {dispute['status']}; evidence can be submitted only "
            "once, while the dispute needs a response.",
            code="dispute_already_submitted"
            if dispute["evidence_details"]["submission_count"]
            else "dispute_closed",
        )
    evidence = params.get("evidence", {})
    if not isinstance(evidence, dict):
        raise InvalidRequest("Invalid evidence: pass evidence[field]=value", param="evidence")
    for name, value in evidence.items():
        if name not in EVIDENCE_FIELDS:
            raise InvalidRequest(f"Received unknown parameter: evidence[{name}]", param="evidence")
        dispute["evidence"][name] = value or None
    dispute["evidence_details"]["has_evidence"] = any(dispute["evidence"].values())
    dispute["metadata"].update(get_metadata(params))
    if get_bool(params, "submit", default=True):
        inquiry = dispute["status"] == "warning_needs_response"
        dispute["status"] = "warning_under_review" if inquiry else "under_review"
        dispute["evidence_details"]["submission_count"] = 1
        dispute["submitted_at"] = ctx.now
        if not inquiry:
            counter = dispute_balance_transactions(ctx, dispute, step="counter")
            dispute["balance_transactions"].append(counter)
        ctx.emit("charge.dispute.updated", dispute)
    ctx.save(dispute)
    return dispute


def close(ctx: Ctx, dispute_id: str) -> Obj:
    """``POST /v1/disputes/{id}/close``: the merchant accepts the loss (or drops an inquiry)."""
    dispute = get(ctx, dispute_id)
    if dispute["status"] == "warning_needs_response":
        return _resolve(ctx, dispute, "warning_closed")
    if dispute["status"] != "needs_response":
        raise InvalidRequest(f"This dispute is already {dispute['status']}.")
    return _resolve(ctx, dispute, "lost")


def _resolve(ctx: Ctx, dispute: Obj, status: str) -> Obj:
    dispute["status"] = status
    if status == "won":
        txn = dispute_balance_transactions(ctx, dispute, step="reinstatement")
        dispute["balance_transactions"].append(txn)
    ctx.save(dispute)
    if status == "won":
        ctx.emit("charge.dispute.funds_reinstated", dispute)
    ctx.emit("charge.dispute.closed", dispute)
    return dispute


def tick(ctx: Ctx) -> None:
    """Advance every open dispute of the account to the time ``ctx.now``."""
    for _, dispute in ctx.store.find(ctx.conn, ctx.account, "dispute", oldest_first=True):
        details, status = dispute["evidence_details"], dispute["status"]
        if status in ("needs_response", "warning_needs_response") and ctx.now > details["due_by"]:
            details["past_due"] = True
            if status == "warning_needs_response":
                _escalate(ctx, dispute)
            else:
                _resolve(ctx, dispute, "lost")
        elif status in ("under_review", "warning_under_review") and ctx.now >= (
            dispute["submitted_at"] + REVIEW_PERIOD_S
        ):
            outcome, _ = decide(dispute["evidence"], dispute["reason"])
            if status == "under_review":
                _resolve(ctx, dispute, outcome)
            elif outcome == "won":
                _resolve(ctx, dispute, "warning_closed")
            else:
                _escalate(ctx, dispute)

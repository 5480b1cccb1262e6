"""Disputes end to end: the sandbox opens them, webhooks bring them in, we answer them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.chargebacks.counts import merchant_tiers, month_counts
from payment_systems.database.ledger_store import account_balances
from payment_systems.database.models import DisputeEvent, DisputeRecord, OutboxMessage
from payment_systems.integrations.psp_sandbox.control import advance_clock

DAY = 86_400
SHIPPED = {
    "customer_email": "ana@example.com",
    "product": "Trail shoes, size 41",
    "shipping_carrier": "UPS",
    "tracking_number": "1Z999AA10123456784",
    "delivery_signature": "signed-by-ana.png",
}


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with local_stack() as running:
        yield running


def _wait(predicate: Callable[[], object], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _pay(stack: LocalStack, key: str, pm: str, metadata: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.url}/v1/payments",
        json={"amount": 7500, "currency": "usd", "payment_method": pm, "metadata": metadata},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _advance(stack: LocalStack, seconds: int) -> dict[str, Any]:
    return advance_clock(stack.sandbox_url, stack.psp_key, seconds)


def _dispute(stack: LocalStack, dispute_id: str) -> DisputeRecord | None:
    with stack.runtime.sessions() as session:
        return session.get(DisputeRecord, dispute_id)


def _status_becomes(stack: LocalStack, dispute_id: str, status: str) -> None:
    _wait(lambda: (d := _dispute(stack, dispute_id)) is not None and d.status == status)


def _balances(stack: LocalStack) -> dict[str, int]:
    with stack.runtime.sessions() as session:
        return {code: total for (code, _), total in account_balances(session).items()}


def _opened(stack: LocalStack, pm: str, metadata: dict[str, str], status: str) -> str:
    _pay(stack, f"order-{pm}", pm, metadata)
    [dispute_id] = _advance(stack, 60)["disputes_opened"]
    _status_becomes(stack, dispute_id, status)
    return str(dispute_id)


def test_a_dispute_webhook_records_the_chargeback_and_books_the_withdrawal(
    stack: LocalStack,
) -> None:
    dispute_id = _opened(stack, "pm_card_createDispute", SHIPPED, "needs_response")
    balances = _balances(stack)
    assert balances["disputed_funds"] == 7_500
    assert balances["dispute_fees"] == 1_500
    record = _dispute(stack, dispute_id)
    assert record is not None and record.funds_withdrawn and record.reason == "fraudulent"


def test_strong_evidence_is_fought_and_won_and_only_the_dispute_fee_is_lost(
    stack: LocalStack,
) -> None:
    dispute_id = _opened(stack, "pm_card_createDispute", SHIPPED, "needs_response")
    assert stack.runtime.disputes is not None
    response = stack.runtime.disputes.respond(dispute_id)
    assert (response.action, response.status) == ("fought", "under_review")
    assert {"shipping_tracking_number", "customer_signature"} <= set(response.evidence.fields)
    _advance(stack, 2 * DAY)
    _status_becomes(stack, dispute_id, "won")
    balances = _balances(stack)
    assert (balances["disputed_funds"], balances["dispute_fees"]) == (0, 1_500)
    assert balances.get("dispute_losses", 0) == 0


def test_weak_evidence_is_accepted_and_booked_as_a_loss(stack: LocalStack) -> None:
    dispute_id = _opened(stack, "pm_card_createDispute", {}, "needs_response")
    assert stack.runtime.disputes is not None
    response = stack.runtime.disputes.respond(dispute_id)
    assert (response.action, response.status) == ("accepted", "lost")
    assert not response.decision.fight
    balances = _balances(stack)
    assert (balances["disputed_funds"], balances["dispute_losses"]) == (0, 7_500)
    assert balances["dispute_fees"] == 1_500  # no counter fee: we never countered


def test_every_step_is_a_versioned_event_and_an_outbox_message(stack: LocalStack) -> None:
    dispute_id = _opened(stack, "pm_card_createDispute", SHIPPED, "needs_response")
    assert stack.runtime.disputes is not None
    stack.runtime.disputes.respond(dispute_id)
    _advance(stack, 2 * DAY)
    _status_becomes(stack, dispute_id, "won")
    with stack.runtime.sessions() as session:
        events = session.scalars(
            sa.select(DisputeEvent).where(DisputeEvent.dispute_id == dispute_id)
            .order_by(DisputeEvent.version)
        ).all()  # fmt: skip
        outbox = session.scalars(
            sa.select(OutboxMessage.type).where(OutboxMessage.event_id.like(f"{dispute_id}:%"))
        ).all()
    types = ["dispute.needs_response", "dispute.under_review", "dispute.won"]
    assert [(e.version, e.type) for e in events] == list(enumerate(types, start=1))
    assert sorted(outbox) == sorted(types)


def test_a_replayed_or_stale_dispute_changes_nothing(stack: LocalStack) -> None:
    dispute_id = _opened(stack, "pm_card_createDispute", SHIPPED, "needs_response")
    assert stack.runtime.disputes is not None
    old_snapshot = stack.runtime.disputes.gateway.retrieve(dispute_id)
    stack.runtime.disputes.respond(dispute_id)
    before = _balances(stack)
    with stack.runtime.sessions.begin() as session:
        outcome = stack.runtime.disputes.sync(session, old_snapshot)  # a late webhook's view
    assert outcome[0] == "stale"
    assert _balances(stack) == before
    record = _dispute(stack, dispute_id)
    assert record is not None and (record.status, record.version) == ("under_review", 2)


def test_an_inquiry_is_recorded_without_moving_money(stack: LocalStack) -> None:
    _opened(stack, "pm_card_createDisputeInquiry", SHIPPED, "warning_needs_response")
    assert "disputed_funds" not in _balances(stack)


def test_a_merchants_month_counts_only_chargebacks_against_settled_sales(
    stack: LocalStack,
) -> None:
    _opened(stack, "pm_card_createDispute", SHIPPED, "needs_response")
    _pay(stack, "order-plain", "pm_card_visa", {})
    month = datetime.now(UTC).date()
    with stack.runtime.sessions() as session:
        counts = month_counts(session, stack.merchant_id, month)
        tiers = merchant_tiers(session, month)[stack.merchant_id]
    assert (counts.settled, counts.chargebacks) == (2, 1)
    assert [t.tier for t in tiers] == ["standard", "standard"]  # 50%, but far too few to count

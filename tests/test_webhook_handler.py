"""Webhooks into our API: verified, applied once, never backwards, re-fetched when it matters."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.core import payment_state as ps
from payment_systems.core.payments import PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import Merchant, Payment
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra.engines import create_engine
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.integrations.webhook_handler import WebhookHandler
from payment_systems.money import Money


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with local_stack() as running:
        yield running


def _pay(stack: LocalStack, key: str, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key}
    payload = {"amount": 1500, "currency": "usd", "payment_method": "pm_card_visa", **body}
    return httpx.post(f"{stack.url}/v1/payments", json=payload, headers=headers, timeout=30)


def _inbox(stack: LocalStack) -> list[tuple[str, str]]:
    with stack.runtime.sessions() as session:
        return [
            (r.event_id, r.outcome)
            for r in session.execute(sa.text("SELECT event_id, outcome FROM webhook_inbox"))
        ]


def _wait(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_bad_signature_is_a_400_problem(stack: LocalStack) -> None:
    response = httpx.post(
        f"{stack.url}/v1/webhooks/psp",
        content=b'{"id": "evt_forged", "type": "payment_intent.succeeded"}',
        headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert _inbox(stack) == []


def test_a_webhook_completes_a_payment_whose_api_request_died_after_the_psp_call(
    stack: LocalStack,
) -> None:
    def crash(point: str) -> None:
        if point == "psp_called":
            raise RuntimeError("the worker died right after the PSP charged")

    stack.runtime.service.crash_point = crash
    assert _pay(stack, "dies").status_code == 500
    with stack.runtime.sessions() as session:
        payment = session.scalar(sa.select(Payment))
        assert payment is not None and payment.status == "processing"
    _wait(lambda: stack.runtime.service.get(stack.merchant_id, payment.id).status == "succeeded")
    assert "applied" in {outcome for _, outcome in _inbox(stack)}


def test_duplicate_deliveries_are_acknowledged_and_applied_once(stack: LocalStack) -> None:
    stack.runtime.service.crash_point = lambda p: (
        (_ for _ in ()).throw(RuntimeError()) if p == "psp_called" else None
    )
    httpx.post(
        f"{stack.sandbox_url}/_sandbox/faults",
        auth=(stack.psp_key, ""),
        json={"kind": "webhook_duplicate", "duration_s": 30},
    ).raise_for_status()
    _pay(stack, "dup")
    _wait(lambda: len(_inbox(stack)) >= 3)
    time.sleep(0.5)  # let the second copies arrive
    rows = _inbox(stack)
    assert len(rows) == len({event_id for event_id, _ in rows})
    [payment_id] = [p.id for p in _payments(stack)]
    events = stack.runtime.service.events(payment_id)
    assert [t for t, _ in events].count(ps.CAPTURED) == 1


def _payments(stack: LocalStack) -> list[Payment]:
    with stack.runtime.sessions() as session:
        return list(session.scalars(sa.select(Payment)))


def test_a_handler_crash_is_a_5xx_and_the_psps_retry_applies_it_once(stack: LocalStack) -> None:
    stack.runtime.service.crash_point = lambda p: (
        (_ for _ in ()).throw(RuntimeError()) if p == "psp_called" else None
    )
    crashes = itertools.count()

    def crash_once(point: str) -> None:
        if point == "before_commit" and next(crashes) == 0:
            raise RuntimeError("handler crashed before commit")

    stack.runtime.webhooks.crash_point = crash_once
    _pay(stack, "retry-me")
    [payment] = _payments(stack)
    _wait(lambda: stack.runtime.service.get(stack.merchant_id, payment.id).status == "succeeded")
    events = stack.runtime.service.events(payment.id)
    assert [t for t, _ in events].count(ps.CAPTURED) == 1


# -- ordering: every permutation, with duplicates, ends where in-order ends -------------


@pytest.fixture(scope="module")
def history(psp_sandbox: SandboxServer) -> dict[str, Any]:
    """A real event history from the sandbox: authorize, partial capture, two refunds."""
    psp = PSPClient("sk_test_" + uuid.uuid4().hex, psp_sandbox.url)
    intent = psp.authorize(
        merchant_id="m_hist", payment_id="pay_hist", amount=Money(5000, "USD"),
        payment_method="pm_card_visa", capture=False,
    )  # fmt: skip
    psp.capture(
        merchant_id="m_hist", payment_id="pay_hist", intent_id=intent.id, amount=Money(4000, "USD")
    )
    for n, amount in enumerate((1000, 500)):
        psp.refund(
            merchant_id="m_hist",
            payment_id="pay_hist",
            refund_id=f"r{n}",
            intent_id=intent.id,
            amount=Money(amount, "USD"),
        )
    events = [
        e.to_dict() for e in psp.stripe.v1.events.list(params={"limit": 100}).auto_paging_iter()
    ]
    return {"psp": psp, "events": list(reversed(events))}


def _replay(tmp: Path, history: dict[str, Any], order: list[int]) -> ps.PaymentState:
    engine = create_engine(f"sqlite:///{tmp / uuid.uuid4().hex}.db")
    upgrade(engine)
    sessions = session_factory(engine)
    service = PaymentService(sessions, history["psp"], new_id=lambda: "pay_hist")
    with unit_of_work(sessions) as session:
        session.add(
            Merchant(
                id="m_hist",
                name="History",
                api_key_hash=uuid.uuid4().hex,
                api_key_prefix="sk_test_",
            )
        )
        session.add(Payment(
            id="pay_hist", merchant_id="m_hist", idempotency_key="k", amount_minor=5000,
            currency="USD",
            status="new", capture_method="manual", payment_method="pm_card_visa",
        ))  # fmt: skip
        session.flush()
        payment = session.get_one(Payment, "pay_hist")
        service.apply_events(
            session,
            payment,
            [(ps.CREATED, {"amount": 5000, "currency": "USD", "capture_method": "manual"})],
        )
    handler = WebhookHandler(sessions, service)
    for i in order:
        handler.apply(history["events"][i])
    stored = service.get("m_hist", "pay_hist")
    folded = ps.fold(service.events("pay_hist"))
    assert folded.status == stored.status  # the row is still the fold of its events
    return folded


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_order_with_duplicates_ends_in_the_in_order_state(
    tmp_path: Path, history: dict[str, Any], data: st.DataObject
) -> None:
    n = len(history["events"])
    in_order = _replay(tmp_path, history, list(range(n)))
    shuffled = data.draw(st.permutations(range(n)))
    duplicates = data.draw(st.lists(st.integers(0, n - 1), max_size=5))
    final = _replay(tmp_path, history, [*shuffled, *duplicates])
    assert (final.status, final.amount_captured, final.amount_refunded) == (
        in_order.status, in_order.amount_captured, in_order.amount_refunded,
    )  # fmt: skip
    assert (in_order.status, in_order.amount_captured, in_order.amount_refunded) == (
        "partially_refunded",
        4000,
        1500,
    )


def test_a_late_event_never_moves_a_payment_backwards(
    tmp_path: Path, history: dict[str, Any]
) -> None:
    events = history["events"]
    succeeded = next(i for i, e in enumerate(events) if e["type"] == "payment_intent.succeeded")
    capturable = next(
        i for i, e in enumerate(events) if e["type"] == "payment_intent.amount_capturable_updated"
    )
    final = _replay(
        tmp_path, history, [succeeded, capturable]
    )  # "authorized" arrives after "succeeded"
    assert final.status != "requires_capture"


def test_a_rejected_webhook_is_logged_without_the_secret_or_the_payload(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    payload = b'{"id": "evt_x", "data": {"object": {"card": {"number": "4242424242424242"}}}}'
    with caplog.at_level("WARNING"):
        httpx.post(
            f"{stack.url}/v1/webhooks/psp",
            content=payload,
            headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
        )
    logged = caplog.text
    assert "rejected a webhook" in logged
    assert "4242424242424242" not in logged
    assert all(secret not in logged for secret in stack.runtime.webhooks.secrets)


def test_a_constraint_failure_that_is_not_a_duplicate_is_raised_not_acknowledged(
    stack: LocalStack,
) -> None:
    from sqlalchemy.exc import IntegrityError

    def violate(_point: str) -> None:
        raise IntegrityError("INSERT ...", {}, Exception("FOREIGN KEY constraint failed"))

    handler = WebhookHandler(stack.runtime.sessions, stack.runtime.service, crash_point=violate)
    event = {"id": "evt_fk", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    with pytest.raises(IntegrityError):
        handler.apply(event)  # a 500: the PSP retries, nothing is lost
    assert _inbox(stack) == []


def test_a_write_conflict_with_a_concurrent_writer_is_retried_once_in_a_fresh_transaction(
    stack: LocalStack,
) -> None:
    from sqlalchemy.exc import IntegrityError

    conflicts = iter([IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed"))])

    def first_attempt_loses_the_race(_point: str) -> None:
        error = next(conflicts, None)
        if error is not None:
            raise error

    handler = WebhookHandler(
        stack.runtime.sessions, stack.runtime.service, crash_point=first_attempt_loses_the_race
    )
    event = {"id": "evt_race", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    assert handler.apply(event).outcome == "ignored"
    assert _inbox(stack) == [("evt_race", "ignored")]

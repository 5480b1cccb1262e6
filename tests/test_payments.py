"""The payment service against the real sandbox and a real database."""

from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.core import payment_state as ps
from payment_systems.core.ledger import Ledger
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import (
    CreatePayment,
    PaymentNotFound,
    PaymentService,
    RefundTooLarge,
)
from payment_systems.database.ledger_store import SqlJournalStore, account_balances
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import PaymentEvent
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient, RetryPolicy
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import CircuitBreaker


@pytest.fixture
def sessions(any_engine: Engine) -> sessionmaker[Session]:
    upgrade(any_engine)
    return session_factory(any_engine)


@pytest.fixture
def merchant_id(sessions: sessionmaker[Session]) -> str:
    with unit_of_work(sessions) as session:
        merchant, _key = create_merchant(session, "Test Shop")
        return merchant.id


@pytest.fixture
def service(
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str
) -> PaymentService:
    psp = PSPClient(
        psp_key, psp_sandbox.url, retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02),
        breaker=CircuitBreaker(f"t-{uuid.uuid4()}"), read_timeout_s=0.5,
    )  # fmt: skip
    return PaymentService(sessions, psp)


def _pay(service: PaymentService, merchant_id: str, key: str = "k1", **kw: object) -> object:
    command = CreatePayment(Money.of("20.00", "USD"), str(kw.pop("pm", "pm_card_visa")), **kw)  # type: ignore[arg-type]
    return service.create(merchant_id, key, command)


def _balances(sessions: sessionmaker[Session]) -> dict[tuple[str, str], int]:
    with sessions() as session:
        return account_balances(session)


def test_an_automatic_payment_succeeds_and_posts_capture_and_fee(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id)
    assert payment.status == "succeeded"  # type: ignore[attr-defined]
    assert payment.fee_minor == 88  # type: ignore[attr-defined]
    # the merchant pays the PSP's fee: we owe it the net, and the PSP owes us the same
    assert _balances(sessions) == {
        ("merchant_payable", "USD"): -(2000 - 88),
        ("psp_receivable", "USD"): 2000 - 88,
    }


def test_the_same_key_resumes_the_same_payment_without_a_second_charge(
    service: PaymentService, merchant_id: str
) -> None:
    first = _pay(service, merchant_id)
    again = _pay(service, merchant_id)
    assert again.id == first.id  # type: ignore[attr-defined]
    assert len(service.psp.stripe.v1.payment_intents.list().data) == 1


def test_state_always_equals_the_fold_of_its_events(
    service: PaymentService, merchant_id: str
) -> None:
    payment = _pay(service, merchant_id, capture_method="manual")
    service.capture(merchant_id, payment.id, Money.of("15.00", "USD"))  # type: ignore[attr-defined]
    service.refund(merchant_id, payment.id, "r1", Money.of("5.00", "USD"))  # type: ignore[attr-defined]
    stored = service.get(merchant_id, payment.id)  # type: ignore[attr-defined]
    folded = ps.fold(service.events(stored.id))
    assert (folded.status, folded.amount_captured, folded.amount_refunded) == (
        stored.status, stored.amount_captured, stored.amount_refunded,
    )  # fmt: skip
    assert stored.status == "partially_refunded"


def test_a_manual_payment_holds_then_partial_capture_releases_the_rest(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id, capture_method="manual")
    assert payment.status == "requires_capture"  # type: ignore[attr-defined]
    with sessions() as session:
        ledger = Ledger(SqlJournalStore(session))
        assert ledger.balance("psp_receivable", "USD", pending=True) == Money(2000, "USD")
    service.capture(merchant_id, payment.id, Money.of("12.00", "USD"))  # type: ignore[attr-defined]
    with sessions() as session:
        ledger = Ledger(SqlJournalStore(session))
        assert ledger.balance("psp_receivable", "USD", pending=True) == Money(0, "USD")
        fee = service.get(merchant_id, payment.id).fee_minor  # type: ignore[attr-defined]
        assert ledger.balance("merchant_payable", "USD") == Money(-(1200 - fee), "USD")
        assert all(total == 0 for total in ledger.trial_balance().values())


def test_a_decline_is_a_failed_payment_with_the_decline_code(
    service: PaymentService, merchant_id: str
) -> None:
    payment = _pay(service, merchant_id, pm="pm_card_chargeDeclinedInsufficientFunds")
    assert payment.status == "failed"  # type: ignore[attr-defined]
    events = service.events(payment.id)  # type: ignore[attr-defined]
    assert events[-1][1]["decline_code"] == "insufficient_funds"


def test_refunding_more_than_captured_is_refused(service: PaymentService, merchant_id: str) -> None:
    payment = _pay(service, merchant_id)
    with pytest.raises(RefundTooLarge, match="left to refund"):
        service.refund(merchant_id, payment.id, "r1", Money.of("20.01", "USD"))  # type: ignore[attr-defined]


def test_another_merchant_cannot_see_the_payment(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id)
    with unit_of_work(sessions) as session:
        other, _ = create_merchant(session, "Other")
    with pytest.raises(PaymentNotFound):
        service.get(other.id, payment.id)  # type: ignore[attr-defined]


def test_a_psp_timeout_leaves_the_payment_unknown_until_the_janitor_resolves_it(
    service: PaymentService, merchant_id: str, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    httpx.post(
        f"{psp_sandbox.url}/_sandbox/faults",
        auth=(psp_key, ""),
        json={
            "kind": "timeout",
            "phase": "after",
            "hold_s": 1.5,
            "methods": "POST",
            "duration_s": 1,
        },
    ).raise_for_status()
    service.psp.retry = RetryPolicy(max_attempts=1)  # no retry to paper over the timeout
    payment = _pay(service, merchant_id)
    assert payment.status == "unknown"  # type: ignore[attr-defined]
    resolved = service.resolve_unknown(merchant_id, payment.id)  # type: ignore[attr-defined]
    assert resolved.status == "succeeded"


def test_the_janitor_resolves_only_payments_unknown_for_long_enough(
    service: PaymentService, merchant_id: str, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    httpx.post(
        f"{psp_sandbox.url}/_sandbox/faults",
        auth=(psp_key, ""),
        json={
            "kind": "timeout",
            "phase": "after",
            "hold_s": 1.5,
            "methods": "POST",
            "duration_s": 1,
        },
    ).raise_for_status()
    service.psp.retry = RetryPolicy(max_attempts=1)
    payment = _pay(service, merchant_id)
    assert service.run_janitor(min_age_s=3600).payments == []  # too fresh: the PSP may be busy
    [resolved] = service.run_janitor(min_age_s=0).payments
    assert resolved.id == payment.id  # type: ignore[attr-defined]
    assert resolved.status == "succeeded"


def test_when_the_webhook_records_the_psps_answer_first_the_request_still_succeeds_once(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    from payment_systems.core.payments import state_of
    from payment_systems.core.psp_sync import events_to_reach, view_of
    from payment_systems.database.models import Payment

    def webhook_wins(point: str) -> None:
        if point != "psp_called":
            return
        with sessions.begin() as session:  # the PSP's webhook, applied while we were away
            [payment] = session.scalars(sa.select(Payment)).all()
            found = service.psp.resolve_unknown(merchant_id=merchant_id, payment_id=payment.id)
            assert found is not None
            intent = service.psp.retrieve_expanded(str(found.id))
            service.apply_events(session, payment, events_to_reach(state_of(payment),
                                                                    view_of(intent)))  # fmt: skip

    service.crash_point = webhook_wins
    payment = _pay(service, merchant_id)
    assert payment.status == "succeeded"  # type: ignore[attr-defined]
    with sessions() as session:
        types = session.scalars(sa.select(PaymentEvent.type).order_by(PaymentEvent.version)).all()
    assert types == ["PaymentCreated", "PaymentCaptured"]  # captured once, by the webhook
    assert _balances(sessions)[("merchant_payable", "USD")] == -(2000 - 88)  # one fee, not two

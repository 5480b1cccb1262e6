"""Money is correct where the components meet (issue 13's findings, one regression each).

Every test runs the real payment service against the real sandbox and a real
database (SQLite and PostgreSQL), and most end by reading the books with
`check_books`: balanced journals, no open hold on a finished payment, and each
merchant's balance equal to its payments' net.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.core.ledger_checks import check_books
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import (
    CreatePayment,
    KeyReusedWithOtherRequest,
    PaymentService,
    RefundTooLarge,
)
from payment_systems.core.recon_sources import ledger_from_db
from payment_systems.database.ledger_store import merchant_balances
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import LedgerJournal, Payment, Refund
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import (
    PSPClient,
    PSPOutcomeUnknown,
    PSPUnavailable,
    RetryPolicy,
)
from payment_systems.integrations.webhook_handler import WebhookHandler
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import CircuitBreaker


@pytest.fixture
def sessions(any_engine: Engine) -> sessionmaker[Session]:
    upgrade(any_engine)
    return session_factory(any_engine)


def _merchant(sessions: sessionmaker[Session], name: str = "Shop") -> str:
    with unit_of_work(sessions) as session:
        merchant, _key = create_merchant(session, name)
        return merchant.id


@pytest.fixture
def merchant_id(sessions: sessionmaker[Session]) -> str:
    return _merchant(sessions)


def _service(
    sessions: sessionmaker[Session], sandbox: SandboxServer, key: str, read_timeout_s: float
) -> PaymentService:
    psp = PSPClient(
        key, sandbox.url, retry=RetryPolicy(max_attempts=1),
        breaker=CircuitBreaker(f"seams-{uuid.uuid4()}"), read_timeout_s=read_timeout_s,
    )  # fmt: skip
    return PaymentService(sessions, psp)


@pytest.fixture
def service(
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str
) -> PaymentService:
    """A patient client: a loaded machine must not turn a slow answer into a test failure."""
    return _service(sessions, psp_sandbox, psp_key, read_timeout_s=10.0)


@pytest.fixture
def impatient(
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str
) -> PaymentService:
    """For the one call a fault holds open: it times out long before the fault lets go."""
    return _service(sessions, psp_sandbox, psp_key, read_timeout_s=0.5)


@pytest.fixture
def webhooks(sessions: sessionmaker[Session], service: PaymentService) -> WebhookHandler:
    return WebhookHandler(sessions, service, ["whsec_test"])


def _pay(service: PaymentService, merchant_id: str, amount: str = "100.00", **kw: Any) -> Payment:
    command = CreatePayment(Money.of(amount, "USD"), "pm_card_visa", **kw)
    return service.create(merchant_id, str(uuid.uuid4()), command)


def _events(service: PaymentService, event_type: str) -> list[dict[str, Any]]:
    listing = service.psp.stripe.v1.events.list(params={"type": event_type, "limit": 100})
    return [event.to_dict() for event in listing.data]


def _fault(sandbox: SandboxServer, key: str, **spec: Any) -> None:
    httpx.post(f"{sandbox.url}/_sandbox/faults", auth=(key, ""), json=spec).raise_for_status()


def _clear_faults(sandbox: SandboxServer, key: str) -> None:
    httpx.delete(f"{sandbox.url}/_sandbox/faults", auth=(key, "")).raise_for_status()


def _books_clean(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        report = check_books(session, int(time.time()))
    assert report.clean, report


def _refund_journals(sessions: sessionmaker[Session], payment_id: str) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                sa.select(LedgerJournal.id).where(
                    LedgerJournal.payment_id == payment_id, LedgerJournal.category == "refund"
                )
            )
        )


# -- finding 2: a refund is booked once, whichever path arrives first --------------------


def test_a_refund_whose_webhook_lands_first_is_not_booked_again_by_the_api(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    real_refund = service.psp.refund

    def webhook_first(**kwargs: Any) -> Any:  # the PSP's webhook overtakes our answer
        refund = real_refund(**kwargs)
        [event] = _events(service, "charge.refunded")
        assert webhooks.apply(event).outcome == "applied"
        return refund

    service.psp.refund = webhook_first  # type: ignore[method-assign]
    after, _refund_id, _value = service.refund(merchant_id, payment.id, "r1", Money.of("40", "USD"))
    assert after.amount_refunded == 4000  # not 8000
    assert len(_refund_journals(sessions, payment.id)) == 1
    _books_clean(sessions)


def test_a_refund_booked_by_the_api_is_not_booked_again_by_its_late_webhook(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    service.refund(merchant_id, payment.id, "r1", Money.of("40", "USD"))
    [event] = _events(service, "charge.refunded")
    assert webhooks.apply(event).outcome == "stale"
    assert service.get(merchant_id, payment.id).amount_refunded == 4000
    assert len(_refund_journals(sessions, payment.id)) == 1


def test_two_partial_refunds_of_the_same_amount_are_two_refunds_not_one(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    service.refund(merchant_id, payment.id, "r1", Money.of("40", "USD"))
    service.refund(merchant_id, payment.id, "r2", Money.of("40", "USD"))
    for event in _events(service, "charge.refunded"):
        webhooks.apply(event)
    assert service.get(merchant_id, payment.id).amount_refunded == 8000
    assert len(_refund_journals(sessions, payment.id)) == 2
    _books_clean(sessions)


def test_concurrent_partial_refunds_never_over_refund(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id)
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def refund(key: str) -> None:
        start.wait()
        try:
            service.refund(merchant_id, payment.id, key, Money.of("60", "USD"))
            outcomes.append("refunded")
        except RefundTooLarge:
            outcomes.append("refused")

    threads = [threading.Thread(target=refund, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refunded", "refused"]
    assert service.get(merchant_id, payment.id).amount_refunded == 6000
    charge = service.psp.retrieve_expanded(str(payment.psp_intent_id))["latest_charge"]
    assert charge["amount_refunded"] == 6000
    _books_clean(sessions)


def test_a_refund_with_an_unknown_outcome_is_settled_by_the_janitor_once(
    service: PaymentService, impatient: PaymentService, merchant_id: str,
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.5,
           path_prefix="/v1/refunds", methods="POST", duration_s=1)  # fmt: skip
    with pytest.raises(PSPOutcomeUnknown):
        impatient.refund(merchant_id, payment.id, "r1", Money.of("25", "USD"))
    with sessions() as session:
        assert session.scalars(sa.select(Refund.status)).all() == ["unknown"]
    time.sleep(1.0)  # the held answer is released; the fault has expired
    run = service.run_janitor(min_age_s=0)
    assert [r.status for r in run.refunds] == ["succeeded"]
    assert service.get(merchant_id, payment.id).amount_refunded == 2500
    # the client's retry with the same key gets the same refund, not a second one
    _after, _id, value = service.refund(merchant_id, payment.id, "r1", Money.of("25", "USD"))
    assert value == Money.of("25", "USD")
    assert service.get(merchant_id, payment.id).amount_refunded == 2500
    _books_clean(sessions)


# -- finding 3: captures with an unknown outcome -------------------------------------------


def test_an_unknown_capture_that_happened_posts_the_hold_not_a_second_capture(
    service: PaymentService, impatient: PaymentService, merchant_id: str,
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id, capture_method="manual")
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.5,
           path_prefix="/v1/payment_intents", methods="POST", duration_s=1)  # fmt: skip
    assert impatient.capture(merchant_id, payment.id).status == "unknown"
    time.sleep(1.0)
    [settled] = service.run_janitor(min_age_s=0).payments
    assert settled.status == "succeeded"
    _books_clean(sessions)  # the hold was posted, not left open beside a fresh capture


def test_an_unknown_capture_that_never_happened_returns_to_requires_capture_with_one_hold(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session],
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id, capture_method="manual")
    _fault(psp_sandbox, psp_key, kind="error", status=500, phase="before",
           path_prefix="/v1/payment_intents", methods="POST", duration_s=5)  # fmt: skip
    assert service.capture(merchant_id, payment.id).status == "unknown"
    _clear_faults(psp_sandbox, psp_key)
    run = service.run_janitor(min_age_s=0)
    assert run.failures == []
    assert [p.status for p in run.payments] == ["requires_capture"]
    assert service.run_janitor(min_age_s=0).failures == []  # and it does not fail next time
    assert service.capture(merchant_id, payment.id).status == "succeeded"
    _books_clean(sessions)


def test_one_payment_the_janitor_cannot_settle_does_not_stop_the_others(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session],
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    broken = _pay(service, merchant_id, capture_method="manual")
    fine = _pay(service, merchant_id, capture_method="manual")
    _fault(psp_sandbox, psp_key, kind="error", status=500, phase="before",
           path_prefix="/v1/payment_intents", methods="POST", duration_s=5)  # fmt: skip
    service.capture(merchant_id, broken.id)
    service.capture(merchant_id, fine.id)
    _clear_faults(psp_sandbox, psp_key)
    with unit_of_work(sessions) as session:  # the PSP no longer knows this intent
        session.get_one(Payment, broken.id).psp_intent_id = "pi_does_not_exist"
    run = service.run_janitor(min_age_s=0)
    assert [payment_id for payment_id, _error in run.failures] == [broken.id]
    assert [p.id for p in run.payments] == [fine.id]


# -- finding 15: cancel ----------------------------------------------------------------------


def test_cancel_voids_the_authorization_hold_and_a_repeat_is_harmless(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id, capture_method="manual")
    assert service.cancel(merchant_id, payment.id).status == "canceled"
    assert service.cancel(merchant_id, payment.id).status == "canceled"
    with sessions() as session:
        assert merchant_balances(session, int(time.time()), merchant_id) == []
    _books_clean(sessions)


# -- finding 4: per-merchant accounts and balances ------------------------------------------


def test_each_merchant_has_its_own_balance_equal_to_its_payments_net(
    service: PaymentService, sessions: sessionmaker[Session]
) -> None:
    a, b = _merchant(sessions, "A"), _merchant(sessions, "B")
    pa = _pay(service, a, "30.00")
    pb = _pay(service, b, "50.00")
    service.refund(a, pa.id, "r1", Money.of("10", "USD"))
    with sessions() as session:
        balances = {m.merchant_id: m.total for m in merchant_balances(session, 2**40)}
    pa, pb = service.get(a, pa.id), service.get(b, pb.id)
    assert balances == {
        a: 3000 - 1000 - pa.fee_minor,
        b: 5000 - pb.fee_minor,
    }
    _books_clean(sessions)


def test_captured_funds_are_pending_until_the_psp_makes_them_available(
    service: PaymentService, merchant_id: str, sessions: sessionmaker[Session]
) -> None:
    payment = _pay(service, merchant_id)
    with sessions() as session:
        [now] = merchant_balances(session, int(time.time()), merchant_id)
        [later] = merchant_balances(session, int(time.time()) + 30 * 86400, merchant_id)
    net = 10_000 - payment.fee_minor
    assert (now.available, now.pending) == (0, net)
    assert (later.available, later.pending) == (net, 0)


# -- finding 10: key reuse after the Redis record expired -----------------------------------


def test_a_key_reused_with_another_body_after_redis_forgot_it_is_refused_not_replayed(
    service: PaymentService, merchant_id: str
) -> None:
    first = CreatePayment(Money.of("10", "USD"), "pm_card_visa", fingerprint="f" * 64)
    other = CreatePayment(Money.of("99", "USD"), "pm_card_visa", fingerprint="0" * 64)
    service.create(merchant_id, "k1", first)
    with pytest.raises(KeyReusedWithOtherRequest):
        service.create(merchant_id, "k1", other)
    assert service.create(merchant_id, "k1", first).amount_minor == 1000  # same body: resumed


# -- finding 1: reconciliation reads the books ----------------------------------------------


def test_the_ledger_side_of_reconciliation_includes_refunds_booked_from_webhooks(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    psp_refund = service.psp.refund(  # made at the PSP; we hear of it only by webhook
        merchant_id=merchant_id, payment_id=payment.id, refund_id="re_dashboard",
        intent_id=str(payment.psp_intent_id), amount=Money.of("15", "USD"),
    )  # fmt: skip
    [event] = _events(service, "charge.refunded")
    assert webhooks.apply(event).outcome == "applied"
    rows = {row.reference: row for row in ledger_from_db(sessions)}
    assert rows[psp_refund.id].amount == -1500
    charge = service.psp.retrieve_expanded(str(payment.psp_intent_id))["latest_charge"]
    assert (rows[charge["id"]].amount, rows[charge["id"]].fee) == (10_000, payment.fee_minor)
    _books_clean(sessions)


# -- finding 5: no network call inside a database transaction --------------------------------


def test_the_webhook_handler_calls_the_psp_with_no_database_connection_held(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler, any_engine: Engine
) -> None:
    payment = _pay(service, merchant_id)
    service.psp.refund(
        merchant_id=merchant_id, payment_id=payment.id, refund_id="re_x",
        intent_id=str(payment.psp_intent_id), amount=Money.of("5", "USD"),
    )  # fmt: skip
    held_during_calls: list[int] = []
    real_call = service.psp.call

    def observed(*args: Any, **kwargs: Any) -> Any:
        held_during_calls.append(any_engine.pool.checkedout())  # type: ignore[attr-defined]
        return real_call(*args, **kwargs)

    service.psp.call = observed  # type: ignore[method-assign]
    [event] = _events(service, "charge.refunded")
    assert webhooks.apply(event).outcome == "applied"
    assert held_during_calls and set(held_during_calls) == {0}


# -- finding 12: the database guards the ledger ---------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger_entries SET amount_minor = 1", "DELETE FROM ledger_entries",
     "UPDATE ledger_journals SET description = 'x'", "DELETE FROM ledger_journals"],
)  # fmt: skip
def test_raw_sql_cannot_rewrite_or_delete_the_ledger(
    service: PaymentService, merchant_id: str, any_engine: Engine, statement: str
) -> None:
    _pay(service, merchant_id)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), any_engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_postgres_refuses_an_unbalanced_journal_at_commit(pg_engine: Engine) -> None:
    upgrade(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO ledger_accounts (code, currency, kind, merchant_id) "
            "VALUES ('bank', 'USD', 'asset', '')"
        ))  # fmt: skip

    def post_unbalanced_journal() -> None:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO ledger_journals (id, kind, description, created_at) "
                "VALUES ('j1', 'posted', 'raw', now())"
            ))  # fmt: skip
            for direction, amount in (("debit", 100), ("credit", 99)):
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger_entries (journal_id, account_id, direction, "
                        "amount_minor, currency) SELECT 'j1', id, :d, :a, 'USD' "
                        "FROM ledger_accounts"
                    ),
                    {"d": direction, "a": amount},
                )

    with pytest.raises(sa.exc.DatabaseError, match="does not balance"):
        post_unbalanced_journal()  # refused at COMMIT, by the deferred constraint trigger


# -- finding 11: payments are found by their PSP intent through an index --------------------


def test_a_webhook_finds_its_payment_through_the_psp_intent_index(pg_engine: Engine) -> None:
    from payment_systems.database.explain import explain_webhook_lookups

    upgrade(pg_engine)
    plans = explain_webhook_lookups(pg_engine, rows=5_000)
    by_intent, refunds = ("\n".join(plan) for plan in plans.values())
    assert "Index Scan using ix_payments_psp_intent_id" in by_intent
    assert "ix_refunds_payment_id" in refunds


# -- the adversarial review's findings --------------------------------------------------------


def test_a_psp_answer_still_processing_is_not_booked_as_a_final_failure(
    service: PaymentService,
) -> None:
    import stripe

    processing = stripe.PaymentIntent.construct_from(
        {"id": "pi_1", "object": "payment_intent", "status": "processing", "amount": 500,
         "latest_charge": None, "last_payment_error": None},
        "sk_test_x",
    )  # fmt: skip
    assert service._events_from_intent(processing) == []  # the webhook brings the answer


def test_an_unknown_cancel_the_psp_made_settles_as_canceled_and_voids_the_hold(
    service: PaymentService, impatient: PaymentService, merchant_id: str,
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id, capture_method="manual")
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.5,
           path_prefix="/v1/payment_intents", methods="POST", duration_s=1)  # fmt: skip
    assert impatient.cancel(merchant_id, payment.id).status == "unknown"
    time.sleep(1.0)
    run = service.run_janitor(min_age_s=0)
    assert run.failures == []
    assert [p.status for p in run.payments] == ["canceled"]
    _books_clean(sessions)  # the hold was voided


def test_a_refund_retry_that_cannot_reach_the_psp_stays_unknown_and_is_booked_once_later(
    service: PaymentService, impatient: PaymentService, merchant_id: str,
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    from payment_systems.integrations.psp_sandbox.server import free_port

    payment = _pay(service, merchant_id)
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.5,
           path_prefix="/v1/refunds", methods="POST", duration_s=1)  # fmt: skip
    with pytest.raises(PSPOutcomeUnknown):
        impatient.refund(merchant_id, payment.id, "r1", Money.of("30", "USD"))
    unreachable = PaymentService(sessions, PSPClient(psp_key, f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(PSPUnavailable):
        unreachable.refund(merchant_id, payment.id, "r1", Money.of("30", "USD"))
    with sessions() as session:  # not "failed": the first attempt may have landed
        assert session.scalars(sa.select(Refund.status)).all() == ["unknown"]
    time.sleep(1.0)
    service.run_janitor(min_age_s=0)
    assert service.get(merchant_id, payment.id).amount_refunded == 3000
    refunds = service.psp.list_refunds(str(payment.psp_intent_id))
    assert [r["amount"] for r in refunds] == [3000]  # one refund at the PSP, booked once
    _books_clean(sessions)


def test_a_retry_of_an_unknown_refund_asks_the_psp_before_calling_it_again(
    service: PaymentService, impatient: PaymentService, merchant_id: str,
    psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    _fault(psp_sandbox, psp_key, kind="timeout", phase="after", hold_s=1.5,
           path_prefix="/v1/refunds", methods="POST", duration_s=1)  # fmt: skip
    with pytest.raises(PSPOutcomeUnknown):
        impatient.refund(merchant_id, payment.id, "r1", Money.of("30", "USD"))
    time.sleep(1.0)
    calls: list[Any] = []
    real_refund = service.psp.refund

    def counted(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_refund(**kwargs)

    service.psp.refund = counted  # type: ignore[method-assign]
    after, _id, _value = service.refund(merchant_id, payment.id, "r1", Money.of("30", "USD"))
    assert after.amount_refunded == 3000
    assert calls == []  # found at the PSP by our id: no second refund request, even if the
    # PSP had forgotten the idempotency key by now


def test_a_refund_event_alone_is_enough_to_book_a_refund_made_at_the_psp(
    service: PaymentService, merchant_id: str, webhooks: WebhookHandler,
    sessions: sessionmaker[Session],
) -> None:  # fmt: skip
    payment = _pay(service, merchant_id)
    service.psp.refund(
        merchant_id=merchant_id, payment_id=payment.id, refund_id="re_dashboard",
        intent_id=str(payment.psp_intent_id), amount=Money.of("12", "USD"),
    )  # fmt: skip
    [event] = _events(service, "refund.created")  # charge.refunded lost: only this one arrives
    assert webhooks.apply(event).outcome == "applied"
    assert service.get(merchant_id, payment.id).amount_refunded == 1200
    [late] = _events(service, "charge.refunded")
    assert webhooks.apply(late).outcome == "stale"
    _books_clean(sessions)


def test_a_payment_left_unknown_for_over_an_hour_is_a_break_in_the_books(
    service: PaymentService, merchant_id: str,
    sessions: sessionmaker[Session], psp_sandbox: SandboxServer, psp_key: str,
) -> None:  # fmt: skip
    from payment_systems.core.ledger_checks import unsettled_payments

    payment = _pay(service, merchant_id, capture_method="manual")
    _fault(psp_sandbox, psp_key, kind="error", status=500, phase="before",
           path_prefix="/v1/payment_intents", methods="POST", duration_s=5)  # fmt: skip
    assert service.capture(merchant_id, payment.id).status == "unknown"
    with sessions() as session:
        assert unsettled_payments(session, int(time.time())) == []  # the janitor's business
        later = int(time.time()) + 2 * 3600
        assert unsettled_payments(session, later) == [payment.id]  # nobody settled it

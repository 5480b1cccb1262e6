"""Trace one payment from the API to the bank statement, through every real component.

``payment-systems demo`` runs `trace` on the embedded system (`api.local`):
a merchant key, ``POST /v1/payments`` with an idempotency key and its
duplicate retry, the fraud check, an FX quote when the currency is not the
settlement currency, the PSP's authorization and capture in the sandbox,
the signed webhook, the outbox relay to the Redis stream, the ledger
postings, the sandbox clock moved to the payout, the bank statement, and a
three-way reconciliation that must come out clean.

Each step is timed and reports the ids it touched. `FAILURE_POINTS` lists
what can go wrong at each step, which component guards it, and which test
proves the guard. A test checks that every test named there exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from payment_systems.api.local import LocalStack, local_stack
from payment_systems.core.recon_sources import bank_from_payouts, ledger_from_db, psp_from_api
from payment_systems.core.reconciliation import reconcile
from payment_systems.database.models import (
    LedgerAccount,
    LedgerEntry,
    LedgerJournal,
    PaymentEvent,
    WebhookInbox,
)
from payment_systems.fraud.velocity import Attempt, card_fingerprint
from payment_systems.fx.converter import CachedRates, FxConverter, SandboxRates
from payment_systems.infra.redis import as_text
from payment_systems.integration.reliability import Reliability, reliability
from payment_systems.integrations.psp_sandbox.control import advance_clock
from payment_systems.money import Money
from payment_systems.patterns.outbox import STREAM, OutboxRelay

SETTLEMENT_CURRENCY = "USD"
PAYOUT_DELAY_S = 3 * 86_400  # the sandbox pays out funds two days after they are available


@dataclass(frozen=True, slots=True)
class Step:
    """One hop of the payment: what ran, how long it took, what it produced."""

    number: int
    name: str
    component: str  # the module that did the work
    ms: float
    facts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FailurePoint:
    """Something that can go wrong at a step, what stops it, and the test that proves it."""

    step: str
    failure: str
    guard: str
    test: str  # tests/<file>.py::<test name>


FAILURE_POINTS: tuple[FailurePoint, ...] = (
    FailurePoint("POST /v1/payments", "the client times out and retries",
                 "idempotency key + stored response (core/idempotency.py)",
                 "tests/test_api.py::test_replay_returns_the_stored_response_byte_for_byte"),
    FailurePoint("POST /v1/payments", "two retries race each other",
                 "Redis lock with SET NX and a fencing token",
                 "tests/test_idempotency_races.py::test_50_threads_and_4_processes_racing_one_key_charge_exactly_once"),
    FailurePoint("POST /v1/payments", "the same key with a different body",
                 "request fingerprint -> 422",
                 "tests/test_api.py::test_the_same_key_with_a_different_body_is_a_422"),
    FailurePoint("POST /v1/payments", "malformed body or an unknown currency",
                 "typed 400 problem+json before any lock",
                 "tests/test_api.py::test_an_unknown_currency_is_a_400_that_names_it"),
    FailurePoint("POST /v1/payments", "Redis is dead",
                 "fail closed with 503, or IDEMPOTENCY_FALLBACK=sql",
                 "tests/test_chaos_building_blocks.py::test_the_sql_fallback_takes_over_the_locks_while_redis_is_dead"),
    FailurePoint("POST /v1/payments", "the database pool is exhausted",
                 "bounded pool + lock_timeout -> 503 database_busy",
                 "tests/test_pool_exhaustion.py::test_an_exhausted_pool_answers_503_within_the_pool_timeout_and_recovers"),
    FailurePoint("fraud check", "a card-testing burst",
                 "velocity rules in Redis sorted sets (fraud/velocity.py)",
                 "tests/test_fraud_velocity.py::test_blocked_attempts_never_reach_the_psp"),
    FailurePoint("FX quote", "the rate moves between quote and capture",
                 "a locked quote honoured until it expires (fx/converter.py)",
                 "tests/test_fx.py::test_a_locked_quote_is_honoured_until_expiry_then_requoted"),
    FailurePoint("PSP authorize + capture", "the worker dies right after the PSP charged",
                 "recovery points + the PSP idempotency key",
                 "tests/test_idempotency_races.py::test_a_worker_killed_at_any_recovery_point_is_completed_by_the_retry_with_one_charge"),
    FailurePoint("PSP authorize + capture", "the PSP answers 5xx",
                 "retries with one key (integrations/stripe_client.py)",
                 "tests/test_stripe_client.py::test_a_5xx_window_is_retried_to_success_with_exactly_one_charge"),
    FailurePoint("PSP authorize + capture", "the PSP times out: outcome unknown",
                 "payment recorded unknown; the janitor asks the PSP",
                 "tests/test_payments.py::test_a_psp_timeout_leaves_the_payment_unknown_until_the_janitor_resolves_it"),
    FailurePoint("PSP authorize + capture", "the PSP is down for minutes",
                 "circuit breaker shared in Redis (patterns/circuit_breaker.py)",
                 "tests/test_stripe_client.py::test_an_open_breaker_fails_fast_without_calling_the_psp"),
    FailurePoint("signed webhook", "a forged or tampered event",
                 "HMAC signature with a 5-minute tolerance",
                 "tests/test_webhook_signatures.py::test_a_tampered_payload_is_rejected"),
    FailurePoint("signed webhook", "the PSP delivers an event twice",
                 "webhook_inbox keyed by event id, in the same transaction",
                 "tests/test_webhook_handler.py::test_duplicate_deliveries_are_acknowledged_and_applied_once"),
    FailurePoint("signed webhook", "events arrive out of order",
                 "state machine re-reads the PSP; never moves backwards",
                 "tests/test_webhook_handler.py::test_a_late_event_never_moves_a_payment_backwards"),
    FailurePoint("outbox relay", "the app dies between commit and publish",
                 "transactional outbox (patterns/outbox.py)",
                 "tests/test_outbox.py::test_an_app_killed_after_commit_but_before_publish_loses_nothing"),
    FailurePoint("outbox relay", "the relay publishes twice",
                 "idempotent consumer (consumer_inbox)",
                 "tests/test_outbox.py::test_a_relay_killed_after_xadd_publishes_twice_and_the_consumer_applies_once"),
    FailurePoint("ledger postings", "an unbalanced journal",
                 "debits = credits per currency, checked before writing",
                 "tests/test_ledger.py::test_any_operation_sequence_keeps_every_currency_balanced"),
    FailurePoint("payout", "money paid out before it is available",
                 "the sandbox's availability schedule",
                 "tests/test_psp_sandbox_settlement.py::test_nothing_is_paid_out_before_funds_are_available"),
    FailurePoint("three-way reconciliation", "ledger, PSP and bank disagree",
                 "every break found and classified (core/reconciliation.py)",
                 "tests/test_reconciliation.py::test_any_mix_of_breaks_is_found_exactly"),
)  # fmt: skip


@dataclass
class Trace:
    """The whole trace: steps, balances, reconciliation, reliability."""

    amount: Money
    steps: list[Step] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)
    reconciliation: dict[str, Any] = field(default_factory=dict)
    reliability: Reliability | None = None

    @property
    def clean(self) -> bool:
        return bool(self.reconciliation.get("clean"))

    def as_json(self) -> dict[str, Any]:
        return {
            "amount": self.amount.amount_minor,
            "currency": self.amount.currency,
            "steps": [asdict(s) for s in self.steps],
            "ledger_balances": self.balances,
            "reconciliation": self.reconciliation,
            "failure_points": [asdict(f) for f in FAILURE_POINTS],
            "reliability": asdict(self.reliability) if self.reliability else None,
            "downtime_minutes_per_year": self.reliability.downtime() if self.reliability else None,
        }


class _Recorder:
    def __init__(self, trace: Trace, on_step: Callable[[Step], None]) -> None:
        self.trace = trace
        self.on_step = on_step

    @contextmanager
    def step(self, name: str, component: str) -> Iterator[dict[str, Any]]:
        facts: dict[str, Any] = {}
        started = time.perf_counter()
        yield facts
        ms = round((time.perf_counter() - started) * 1000, 1)
        done = Step(len(self.trace.steps) + 1, name, component, ms, facts)
        self.trace.steps.append(done)
        self.on_step(done)


def _wait_for(check: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _pay(stack: LocalStack, amount: Money, key: str) -> httpx.Response:
    body = {
        "amount": amount.amount_minor,
        "currency": amount.currency.lower(),
        "payment_method": "pm_card_visa",
        "description": "Order 1001",
        "metadata": {"order_id": "1001"},
    }
    headers = {"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key}
    return httpx.post(f"{stack.url}/v1/payments", json=body, headers=headers, timeout=30)


def trace(amount: Money, *, on_step: Callable[[Step], None] = lambda _s: None) -> Trace:
    """Take ``amount`` end to end on a fresh embedded system; see the module docstring."""
    result = Trace(amount)
    rec = _Recorder(result, on_step)
    with local_stack("Demo Shop") as stack:
        runtime, psp = stack.runtime, stack.runtime.service.psp
        with rec.step("merchant key", "core/merchants.py") as f:
            f.update(merchant=stack.merchant_id, api_key=stack.api_key[:12] + "…")
        if amount.currency != SETTLEMENT_CURRENCY:
            with rec.step("FX quote", "fx/converter.py") as f:
                rates = CachedRates(SandboxRates(stack.sandbox_url, stack.psp_key), runtime.redis)
                quote = FxConverter(rates).quote(amount, SETTLEMENT_CURRENCY)
                f.update(quote=quote.id, mid_rate=str(quote.mid_rate.normalize()),
                         customer_rate=str(round(quote.customer_rate, 6)),
                         merchant_receives=str(quote.converted), fx_revenue=str(quote.revenue),
                         valid_for_s=round(quote.expires_at - quote.created_at))  # fmt: skip
        with rec.step("POST /v1/payments", "api/app.py + core/payments.py") as f:
            first = _pay(stack, amount, "order-1001")
            payment = first.json()
            f.update(status_code=first.status_code, idempotency_key="order-1001",
                     payment=payment.get("id"), status=payment.get("status"))  # fmt: skip
        if first.status_code != 201:
            raise RuntimeError(f"the payment was not created: {first.status_code} {first.text}")
        pid, intent_id = payment["id"], payment["psp_payment_intent"]
        with rec.step("duplicate retry, same key", "core/idempotency.py") as f:
            again = _pay(stack, amount, "order-1001")
            f.update(status_code=again.status_code,
                     replayed=again.headers.get("Idempotent-Replayed") == "true",
                     same_payment=again.json().get("id") == pid,
                     byte_for_byte=again.content == first.content)  # fmt: skip
        with rec.step("fraud check", "fraud/velocity.py") as f:
            rules = runtime.service.fraud
            if rules is not None:
                verdict = rules.peek(Attempt(stack.merchant_id, card_fingerprint("pm_card_visa"),
                                             amount.amount_minor, ip="127.0.0.1"))  # fmt: skip
                f.update(decision=verdict.decision.value, windows=dict(verdict.values or {}))
        with rec.step("PSP authorize + capture", "integrations/stripe_client.py") as f:
            intent = psp.stripe.v1.payment_intents.retrieve(
                intent_id, params={"expand": ["latest_charge.balance_transaction"]}
            ).to_dict()
            charge = intent["latest_charge"]
            txn = charge["balance_transaction"]
            f.update(payment_intent=intent_id, status=intent["status"], charge=charge["id"],
                     gross=txn["amount"], fee=txn["fee"], net=txn["net"])  # fmt: skip
        with rec.step("signed webhook applied", "integrations/webhook_handler.py") as f:

            def received() -> list[tuple[str, str]]:
                with runtime.sessions() as session:
                    rows = session.execute(
                        sa.select(WebhookInbox.type, WebhookInbox.outcome)
                        .where(WebhookInbox.payment_id == pid)
                        .order_by(WebhookInbox.received_at)
                    ).all()
                return [(str(t), str(o)) for t, o in rows]

            _wait_for(lambda: any(t == "payment_intent.succeeded" for t, _ in received()))
            # "stale": the API's own answer from the PSP had already recorded this state,
            # so the webhook confirmed it and changed nothing; "applied": it moved the payment
            f.update(events=[f"{t}: {o}" for t, o in received()], signature="verified (HMAC)")
        with rec.step("outbox relay -> stream", "patterns/outbox.py") as f:
            published = OutboxRelay(runtime.engine, runtime.redis).relay_once()
            entries = [
                as_text(fields[b"type"])
                for _id, fields in (runtime.redis.xrange(STREAM) or [])
                if fields and as_text(fields[b"aggregate_id"]) == pid
            ]
            f.update(published=published, stream=STREAM, events=entries)
        with rec.step("ledger postings", "core/ledger.py") as f:
            postings, balances = _ledger(runtime.sessions, pid)
            result.balances = balances
            f.update(postings=postings, balanced=sum(balances.values()) == 0)
        with rec.step("clock -> payout", "integrations/psp_sandbox (settlement)") as f:
            advance_clock(stack.sandbox_url, stack.psp_key, PAYOUT_DELAY_S)
            payouts = [p.to_dict() for p in psp.stripe.v1.payouts.list(params={"limit": 10})]
            f.update(payouts=[(p["id"], p["amount"], p["status"]) for p in payouts])
        with rec.step("bank statement", "core/recon_sources.py") as f:
            bank = bank_from_payouts(psp)
            f.update(deposits=[(b.reference, b.amount, b.currency) for b in bank])
        with rec.step("three-way reconciliation", "core/reconciliation.py") as f:
            ledger_rows = sorted(ledger_from_db(runtime.sessions), key=lambda r: r.reference)
            psp_rows = sorted(psp_from_api(psp), key=lambda r: r.reference)
            cutoff = max([r.at for r in psp_rows] + [b.at for b in bank])
            report = reconcile(ledger_rows, psp_rows, bank, cutoff=cutoff)
            result.reconciliation = {
                "matched": report.matched,
                "payouts_matched": report.payouts_matched,
                "breaks": len(report.unexplained),
                "clean": not report.unexplained,
            }
            f.update(result.reconciliation)
        with runtime.sessions() as session:
            trail = session.scalars(
                sa.select(PaymentEvent.type)
                .where(PaymentEvent.payment_id == pid)
                .order_by(PaymentEvent.version)
            ).all()
        created = next(s for s in result.steps if s.name == "POST /v1/payments")
        created.facts["audit_trail"] = list(trail)
    result.reliability = reliability()
    return result


def _ledger(sessions: Any, payment_id: str) -> tuple[list[str], dict[str, int]]:
    """The payment's ledger legs, and the signed balance per account (debit +, credit -)."""
    with sessions() as session:
        rows = session.execute(
            sa.select(
                LedgerJournal.id, LedgerAccount.code, LedgerEntry.direction,
                LedgerEntry.amount_minor, LedgerEntry.currency,
            )
            .join(LedgerEntry, LedgerEntry.journal_id == LedgerJournal.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
            .where(LedgerJournal.payment_id == payment_id)
            .order_by(LedgerJournal.created_at, LedgerEntry.id)
        ).all()  # fmt: skip
    postings: list[str] = []
    balances: dict[str, int] = {}
    for journal, account, direction, amount, currency in rows:
        postings.append(f"{journal}: {direction} {account} {Money(amount, currency)}")
        sign = 1 if direction == "debit" else -1
        balances[account] = balances.get(account, 0) + sign * amount
    return postings, balances

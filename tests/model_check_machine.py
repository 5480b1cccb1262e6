"""The model checker: a hypothesis state machine over the real Payments API and PSP sandbox.

`PaymentsModel` drives the running system the way merchants, the network
and the PSP do, in whatever order hypothesis draws:

* **merchants** (two per example, both fresh) create payments in USD and JPY
  with automatic or manual capture (now and then with a card that is
  declined), capture them fully or partly, cancel them, refund them in parts
  (two refunds of one payment at once, from two threads), replay an
  ``Idempotency-Key`` with the same body and with another one, and retry a
  refund whose outcome was unknown;
* **the network** makes the next write to the PSP time out *after* the PSP
  processed it (a sandbox fault), so the API records an unknown outcome;
* **operations** run the janitor;
* **the PSP** sends its webhooks only when the machine says so: the account
  holds them, and rules release all or some of them, in FIFO, LIFO or seeded
  random order, each possibly twice, and redeliver old ones late.

It checks, after every step (cheap, from the books): every journal balances,
no finished payment keeps an authorization hold open, and each merchant's
``merchant_payable`` equals its payments' net. Every answer it receives is
checked against the model (a payment never moves backwards, a replay is
byte-for-byte, a confirmed refund really happened). After releasing every
held webhook and running the janitor (a ``settle_and_check`` rule, and the
teardown of every example) it checks everything against the PSP too:

* no payment or refund is left unsettled, and the janitor failed on nothing;
* each merchant's ``GET /v1/balance`` (available + pending, per currency)
  equals Σ (amount_captured - amount_refunded - fee) over its payments;
* each payment's status, captured and refunded amounts and fee equal the
  PSP's PaymentIntent and charge (read with the official ``stripe`` SDK);
* every refund the API confirmed happened, and nothing else was refunded
  but refunds whose outcome was unknown;
* the PSP holds one PaymentIntent per payment, no payment it does not know,
  and at most one paid charge per payment; one payment per merchant key;
* three-way reconciliation from the books (ledger against the PSP's balance
  transactions; no payouts, so the bank leg is empty) shows no break but
  timing.

This module is imported by ``tests/test_model_check.py`` (a bounded check on
SQLite and PostgreSQL) and by ``benchmarks/bench_model_check.py`` (a long
one, several seeds). Production code never imports it: it needs the sandbox.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

import httpx
import redis
import sqlalchemy as sa
import stripe
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from payment_systems.api.app import create_app
from payment_systems.api.runtime import Runtime, build_runtime
from payment_systems.config import Settings
from payment_systems.core.ledger_checks import check_books
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import refund_id_for
from payment_systems.core.recon_sources import ledger_from_db, psp_from_api
from payment_systems.core.reconciliation import BreakClass, reconcile
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import Refund
from payment_systems.database.session import unit_of_work
from payment_systems.infra.http import BackgroundServer
from payment_systems.integrations.psp_sandbox import control
from payment_systems.integrations.stripe_client import PSPClient, RetryPolicy
from payment_systems.patterns.circuit_breaker import BreakerConfig, CircuitBreaker

CURRENCIES = ("usd", "jpy")
MERCHANTS = ("a", "b")
CARDS = ("pm_card_visa", "pm_card_visa", "pm_card_visa", "pm_card_chargeDeclined")
UNSETTLED = ("new", "processing", "unknown")
# janitor failures that mean "the PSP did not answer in time": it tries again on its next run
TRANSIENT = ("PSPOutcomeUnknown", "PSPUnavailable")
Order = Literal["fifo", "lifo", "random"]
ORDERS: tuple[Order, ...] = ("fifo", "lifo", "random")
SETTLE_EVERY = 8  # requests between two mid-run settle_and_check steps, at least
# Whether the PSP times out on a write (after doing it): one write in four.
TIMES_OUT = st.sampled_from([False, False, False, True])

# The specification of a payment's life, written here rather than read from
# payment_state.TRANSITIONS: checking the system against its own table would
# prove nothing. Statuses a payment may show after each one (besides itself).
NEXT: dict[str, frozenset[str]] = {
    "processing": frozenset(
        {"unknown", "requires_action", "requires_capture", "succeeded", "failed"}
    ),
    # an unknown authorization, capture or cancel: the PSP decides what it became
    "unknown": frozenset(
        {"requires_action", "requires_capture", "succeeded", "failed", "canceled"}
    ),
    "requires_action": frozenset(
        {"unknown", "requires_capture", "succeeded", "failed", "canceled"}
    ),
    "requires_capture": frozenset({"unknown", "succeeded", "canceled"}),
    "succeeded": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"refunded"}),
    "refunded": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
}
# the PSP's PaymentIntent status -> the statuses of ours that agree with it
AGREES = {
    "succeeded": {"succeeded", "partially_refunded", "refunded"},
    "requires_capture": {"requires_capture"},
    "canceled": {"canceled"},
    "requires_payment_method": {"failed"},
    "requires_action": {"requires_action"},
}


def reachable(status: str) -> frozenset[str]:
    """Every status a payment in ``status`` may show later, itself included."""
    seen, todo = {status}, [status]
    while todo:
        for nxt in NEXT.get(todo.pop(), frozenset()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


# -- the system under check -------------------------------------------------------


@dataclass
class SystemUnderCheck:
    """The API (over HTTP, in this process), its runtime, and the current PSP sandbox account.

    Each example gets a fresh sandbox account (`use_fresh_account`): its own
    webhook queue, faults and balance transactions, so nothing one example
    leaves behind (a stuck payment's held webhooks, say) can leak into the
    next one and make a failure impossible to replay.
    """

    api_url: str
    psp_url: str
    runtime: Runtime
    http: httpx.Client
    read_timeout_s: float
    fault_hold_s: float
    # the current account (`use_fresh_account`):
    psp_key: str = field(init=False)
    sdk: stripe.StripeClient = field(init=False)  # the official SDK on the sandbox: its truth
    checker_psp: PSPClient = field(init=False)  # patient reads, for reconciliation

    def use_fresh_account(self) -> None:
        """A new, empty sandbox account, its webhooks held; the API now uses it."""
        key = "sk_test_" + uuid.uuid4().hex
        endpoint = httpx.post(
            f"{self.psp_url}/v1/webhook_endpoints",
            data={"url": f"{self.api_url}/v1/webhooks/psp", "enabled_events[]": "*"},
            auth=(key, ""),
            timeout=30,
        )
        endpoint.raise_for_status()
        control.hold_webhooks(self.psp_url, key)
        # what a redeploy with PSP_API_KEY and PSP_WEBHOOK_SECRETS changed would do
        self.runtime.service.psp = model_check_psp_client(self.psp_url, key, self.read_timeout_s)
        self.runtime.webhooks.secrets = [str(endpoint.json()["secret"])]
        self.psp_key = key
        self.sdk = stripe.StripeClient(key, base_addresses={"api": self.psp_url},
                                       max_network_retries=0)  # fmt: skip
        self.checker_psp = PSPClient(
            key, self.psp_url, breaker=CircuitBreaker(f"checker-{uuid.uuid4().hex}")
        )

    def post(self, path: str, body: object, *, key: str, api_key: str) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        }
        return self.http.post(path, content=json.dumps(body).encode(), headers=headers)

    def get(self, path: str, *, api_key: str) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {api_key}"})

    def new_merchant(self, name: str) -> tuple[str, str]:
        """A fresh merchant: (id, API key)."""
        with unit_of_work(self.runtime.sessions) as session:
            merchant, api_key = create_merchant(session, name)
            return merchant.id, api_key

    def psp_times_out_next_write(self) -> None:
        """The PSP processes the next write, then holds its answer past our read timeout."""
        spec = {
            "kind": "timeout",
            "phase": "after",
            "hold_s": self.fault_hold_s,
            "methods": "POST",
            "duration_s": 60,
        }
        httpx.post(
            f"{self.psp_url}/_sandbox/faults", json=spec, auth=(self.psp_key, ""), timeout=30
        ).raise_for_status()

    def clear_faults(self) -> None:
        httpx.request(
            "DELETE", f"{self.psp_url}/_sandbox/faults", auth=(self.psp_key, ""), timeout=30
        ).raise_for_status()


def model_check_psp_client(psp_url: str, psp_key: str, read_timeout_s: float) -> PSPClient:
    """The API's PSP client: a short read timeout, no retry, a breaker that never opens.

    No retry, because a retry with the same PSP key would get the sandbox's
    stored answer at once, and the outcome would be known after all: the
    model checker wants the unknown outcome, and what resolves it. The
    breaker would otherwise open after a few injected timeouts and turn
    later steps into fast 503s: a different system.
    """
    return PSPClient(
        psp_key,
        psp_url,
        retry=RetryPolicy(max_attempts=1, min_read_s=0.1),
        read_timeout_s=read_timeout_s,
        breaker=CircuitBreaker(
            f"model-check-{uuid.uuid4().hex}", BreakerConfig(failure_threshold=1_000_000)
        ),
    )


@contextmanager
def running_system(
    engine: Engine,
    redis_client: redis.Redis,
    psp_url: str,
    *,
    read_timeout_s: float = 0.8,
    fault_hold_s: float = 1.0,
) -> Iterator[SystemUnderCheck]:
    """The API on ``engine`` and the sandbox at ``psp_url``, whose webhooks come back to it.

    ``read_timeout_s`` is the API's PSP read timeout; an injected timeout
    holds the PSP's answer ``fault_hold_s``, which must be longer.
    """
    assert fault_hold_s > read_timeout_s
    upgrade(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        webhook_secrets=("whsec_until_use_fresh_account",),
        fraud_rules=False,  # one test card, again and again: not what this checks
    )
    psp = model_check_psp_client(psp_url, "sk_test_until_use_fresh_account", read_timeout_s)
    runtime = build_runtime(settings, psp=psp, redis_client=redis_client)
    try:
        with (
            BackgroundServer(create_app(runtime)) as server,
            httpx.Client(base_url=server.url, timeout=60) as http,
        ):
            system = SystemUnderCheck(
                server.url, psp_url, runtime, http, read_timeout_s, fault_hold_s
            )
            system.use_fresh_account()
            yield system
    finally:
        runtime.engine.dispose()


# -- what the model remembers ----------------------------------------------------


@dataclass
class ModelStats:
    """What a run did (summed over examples): the evidence that it explored."""

    examples: int = 0
    steps: int = 0
    full_checks: int = 0
    payments: int = 0
    psp_timeouts: int = 0
    unknown_outcomes: int = 0
    refunds_confirmed: int = 0
    concurrent_refund_pairs: int = 0
    unknown_refunds_retried: int = 0
    replays: int = 0
    webhooks_delivered: int = 0
    webhook_failures: int = 0  # 5xx answers, sent again later (see `PaymentsModel._delivered`)
    rules: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rules"] = dict(sorted(self.rules.items()))
        return out


@dataclass
class Merchant:
    id: str
    api_key: str


@dataclass
class Tracked:
    """One payment as the model knows it: what was asked, and the last status seen."""

    id: str
    merchant: str  # "a" | "b"
    key: str
    currency: str
    amount: int
    capture_method: str
    card: str
    status: str = "processing"
    captured: int = 0
    refunded: int = 0
    fee: int = 0
    intent: str | None = None
    capture_confirmed: int | None = None  # a capture answered "succeeded" with this amount
    refunds_confirmed: dict[str, int] = field(default_factory=dict)  # key -> amount (201)
    # refunds whose outcome the API could not know (504): at most this much, each
    refunds_maybe: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # maybe-refunds not yet settled

    def in_doubt(self) -> int:
        """What unresolved refunds may still take off what is left to refund."""
        return sum(self.refunds_maybe[k] for k in self.unresolved)


@dataclass(frozen=True)
class Sent:
    """A POST the model made, and the answer it got (for replays)."""

    path: str
    body: dict[str, Any]
    key: str
    api_key: str
    status: int
    content: bytes


def _why(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.path} -> {response.status_code} {response.text[:600]}"


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


class PaymentsModel(RuleBasedStateMachine):
    """The rules and invariants; bind a system with `machine_for`."""

    system: ClassVar[SystemUnderCheck]
    stats: ClassVar[ModelStats]
    run: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.system.use_fresh_account()
        self.stats.examples += 1
        self.tag = f"{self.run}-{self.stats.examples}"
        self.merchants = {
            name: Merchant(*self.system.new_merchant(f"Model check {self.tag} {name}"))
            for name in MERCHANTS
        }
        self.payments: dict[str, Tracked] = {}
        self.sent: list[Sent] = []
        self.created: dict[tuple[str, str], set[str]] = {}  # (merchant, key) -> payment ids
        self.delivered: list[str] = []
        self.counter = 0  # requests made (it names their keys)
        # rules whose precondition almost always holds would crowd out the rest: a few each
        self.budget = Counter(
            {"replay_key": 4, "redeliver_late": 3, "two_refunds_at_once": 4, "refused_command": 3}
        )
        self.settled_at = 0

    # -- helpers -------------------------------------------------------------

    def _step(self, name: str) -> None:
        self.stats.steps += 1
        self.stats.rules[name] += 1

    def _key(self, kind: str) -> str:
        self.counter += 1
        return f"mc-{self.tag}-{self.counter}-{kind}"

    def _post(
        self, path: str, body: dict[str, Any], key: str, merchant: str, *, times_out: bool = False
    ) -> httpx.Response:
        """POST as ``merchant``; with ``times_out``, the PSP does the write but answers too late."""
        if times_out:
            self.stats.psp_timeouts += 1
            self.system.psp_times_out_next_write()
        try:
            response = self.system.post(
                path, body, key=key, api_key=self.merchants[merchant].api_key
            )
        finally:
            if times_out:
                self.system.clear_faults()
        self._record(path, body, key, merchant, response)
        return response

    def _record(
        self, path: str, body: dict[str, Any], key: str, merchant: str, response: httpx.Response
    ) -> None:
        api_key = self.merchants[merchant].api_key
        self.sent.append(Sent(path, body, key, api_key, response.status_code, response.content))

    def _observe(self, p: Tracked, view: dict[str, Any]) -> None:
        """A fresh view of ``p``: it may only have moved forward, and its numbers add up."""
        assert view["id"] == p.id, (view["id"], p.id)
        status = view["status"]
        assert status in reachable(p.status), f"{p.id} went backwards: {p.status} -> {status}"
        captured, refunded, fee = view["amount_captured"], view["amount_refunded"], view["fee"]
        assert view["net"] == captured - refunded - fee, view
        assert 0 <= refunded <= captured <= p.amount, view
        assert fee >= 0, view
        if p.captured:
            assert (captured, fee) == (p.captured, p.fee), f"{p.id}: capture changed: {view}"
        assert refunded >= p.refunded, f"{p.id}: refunded went down {p.refunded} -> {refunded}"
        if status in ("succeeded", "partially_refunded", "refunded"):
            assert captured > 0, view
            expected = "refunded" if refunded == captured else "partially_refunded"
            assert status == ("succeeded" if refunded == 0 else expected), view
        else:
            assert captured == 0, view
        if p.intent is not None and view["psp_payment_intent"] is not None:
            assert view["psp_payment_intent"] == p.intent, view
        if status == "unknown" and p.status != "unknown":
            self.stats.unknown_outcomes += 1
        p.status, p.captured, p.refunded, p.fee = status, captured, refunded, fee
        p.intent = view["psp_payment_intent"] or p.intent

    def _refresh(self, p: Tracked) -> dict[str, Any]:
        response = self.system.get(
            f"/v1/payments/{p.id}", api_key=self.merchants[p.merchant].api_key
        )
        assert response.status_code == 200, _why(response)
        view: dict[str, Any] = response.json()
        self._observe(p, view)
        return view

    def _ids(self, keep: Callable[[Tracked], bool]) -> list[str]:
        # in the order they were made: sorting random ids would draw differently every run
        return [p.id for p in self.payments.values() if keep(p)]

    def _capturable(self) -> list[str]:
        return self._ids(lambda p: p.status in ("requires_capture", "unknown"))

    def _refundable(self, least: int = 1) -> list[str]:
        return self._ids(
            lambda p: (
                p.status in ("succeeded", "partially_refunded") and p.captured - p.refunded >= least
            )
        )

    def _stored(self) -> list[Sent]:
        return [s for s in self.sent if s.status in (200, 201)]

    def _delivered(self, sent: Sequence[control.SentWebhook]) -> None:
        """Every delivery is acknowledged, or failed for a while (a 5xx: the PSP sends it again).

        A 4xx is a refusal: the event would never be applied. A 5xx (the
        API's own read of the PSP timed out on a loaded machine, say) puts
        the delivery back in the hold, and settling releases it again until
        it lands, or fails the check after five rounds.
        """
        for s in sent:
            if s["status"] != 200:
                assert s["status"] is None or s["status"] >= 500, f"webhook refused: {s}"
                self.stats.webhook_failures += 1
                continue
            self.stats.webhooks_delivered += 1
            if s["event"] not in self.delivered:
                self.delivered.append(s["event"])

    # -- merchants -------------------------------------------------------------

    @initialize(currency=st.sampled_from(CURRENCIES), amount=st.integers(50, 5_000))
    def a_manual_payment_to_begin_with(self, currency: str, amount: int) -> None:
        """Every example starts with a payment to capture (and so, to refund)."""
        self._step("create")
        self._create("a", currency, amount, "manual", "pm_card_visa")

    @initialize(currency=st.sampled_from(CURRENCIES), amount=st.integers(50, 5_000))
    def an_automatic_payment_to_begin_with(self, currency: str, amount: int) -> None:
        """...and one captured at once, for merchant b."""
        self._step("create")
        self._create("b", currency, amount, "automatic", "pm_card_visa")

    @rule(
        merchant=st.sampled_from(MERCHANTS),
        currency=st.sampled_from(CURRENCIES),
        amount=st.integers(50, 5_000),
        capture_method=st.sampled_from(["manual", "automatic"]),
        card=st.sampled_from(CARDS),
        psp_times_out=TIMES_OUT,
    )
    def create(
        self,
        merchant: str,
        currency: str,
        amount: int,
        capture_method: str,
        card: str,
        psp_times_out: bool,
    ) -> None:
        self._step("create")
        self._create(merchant, currency, amount, capture_method, card, psp_times_out)

    def _create(
        self,
        merchant: str,
        currency: str,
        amount: int,
        capture_method: str,
        card: str,
        times_out: bool = False,
    ) -> None:
        key = self._key("create")
        body = {
            "amount": amount,
            "currency": currency,
            "payment_method": card,
            "capture_method": capture_method,
            "metadata": {"model_check": self.tag},
        }
        response = self._post("/v1/payments", body, key, merchant, times_out=times_out)
        assert response.status_code == 201, _why(response)
        view = response.json()
        if card != "pm_card_visa":
            expected = {"failed", "unknown"}
        elif capture_method == "automatic":
            expected = {"succeeded", "unknown"}
        else:
            expected = {"requires_capture", "unknown"}
        assert view["status"] in expected, _why(response)
        assert (view["amount"], view["currency"]) == (amount, currency), view
        p = Tracked(view["id"], merchant, key, currency, amount, capture_method, card)
        assert p.id not in self.payments, f"a new key gave an old payment: {p.id}"
        self.payments[p.id] = p
        self.created[(merchant, key)] = {p.id}
        self.stats.payments += 1
        self._observe(p, view)
        if view["status"] == "succeeded":
            assert view["amount_captured"] == amount, view

    @precondition(lambda self: bool(self._capturable()))
    @rule(data=st.data(), partial=st.booleans(), psp_times_out=TIMES_OUT)
    def capture(self, data: st.DataObject, partial: bool, psp_times_out: bool) -> None:
        self._step("capture")
        p = self.payments[data.draw(st.sampled_from(self._capturable()), label="payment")]
        amount = None
        if partial and p.amount > 1:
            amount = data.draw(st.integers(1, p.amount - 1), label="amount")
        body = {} if amount is None else {"amount": amount}
        was = p.status
        response = self._post(
            f"/v1/payments/{p.id}/capture",
            body,
            self._key("cap"),
            p.merchant,
            times_out=psp_times_out,
        )
        if response.status_code == 200:
            view = response.json()
            assert view["status"] in ("succeeded", "unknown"), _why(response)
            self._observe(p, view)
            if view["status"] == "succeeded":
                assert view["amount_captured"] == (amount or p.amount), view
                p.capture_confirmed = view["amount_captured"]
            return
        # refused: only if the model could not know the status (an earlier unknown outcome)
        assert was == "unknown", f"{p.id} was {was}: {_why(response)}"
        assert (response.status_code, _code(response)) in (
            (409, "payment_unexpected_state"),
            (504, "psp_outcome_unknown"),
        ), _why(response)
        self._refresh(p)

    @precondition(lambda self: bool(self._capturable()))
    @rule(data=st.data(), psp_times_out=TIMES_OUT)
    def cancel(self, data: st.DataObject, psp_times_out: bool) -> None:
        self._step("cancel")
        p = self.payments[data.draw(st.sampled_from(self._capturable()), label="payment")]
        was = p.status
        response = self._post(
            f"/v1/payments/{p.id}/cancel",
            {},
            self._key("void"),
            p.merchant,
            times_out=psp_times_out,
        )
        if response.status_code == 200:
            view = response.json()
            assert view["status"] in ("canceled", "unknown"), _why(response)
            self._observe(p, view)
            return
        assert was == "unknown", f"{p.id} was {was}: {_why(response)}"
        assert (response.status_code, _code(response)) in (
            (409, "payment_unexpected_state"),
            (504, "psp_outcome_unknown"),
        ), _why(response)
        self._refresh(p)

    @precondition(lambda self: bool(self.payments) and self.budget["refused_command"] > 0)
    @rule(data=st.data())
    def refused_command(self, data: st.DataObject) -> None:
        """A command the payment's state, or its owner, refuses: nothing may change.

        Capture or cancel of a payment that is no longer an authorization,
        a refund of one that was never captured (409), or any of them with
        the other merchant's key (404: another merchant's payment does not
        exist for it).
        """
        self._step("refused_command")
        self.budget["refused_command"] -= 1
        p = self.payments[data.draw(st.sampled_from(self._ids(lambda _: True)), label="payment")]
        before = self._refresh(p)
        other = "b" if p.merchant == "a" else "a"
        choices = [("capture", other), ("cancel", other), ("refund", other)]
        if p.status not in ("requires_capture", "unknown"):
            choices += [("capture", p.merchant), ("cancel", p.merchant)]
        if p.status in ("requires_capture", "failed", "canceled"):
            choices.append(("refund", p.merchant))
        command, merchant = data.draw(st.sampled_from(choices), label="command")
        path, body = {
            "capture": (f"/v1/payments/{p.id}/capture", {}),
            "cancel": (f"/v1/payments/{p.id}/cancel", {}),
            "refund": ("/v1/refunds", {"payment": p.id, "amount": 1}),
        }[command]
        response = self._post(path, body, self._key(f"refused-{command}"), merchant)
        if merchant != p.merchant:
            expected: tuple[int, str | None] = (404, "payment_not_found")
        elif command == "cancel" and p.status == "canceled":
            expected = (200, None)  # canceling again answers with the canceled payment
        else:
            expected = (409, "payment_unexpected_state")
        got = (response.status_code, None if response.status_code == 200 else _code(response))
        assert got == expected, f"{command} of a {p.status} payment: {_why(response)}"
        after = self._refresh(p)
        assert after == before, f"a refused {command} changed {p.id}: {before} -> {after}"

    def _judge_refund(
        self, p: Tracked, key: str, amount: int | None, response: httpx.Response, low: int
    ) -> str:
        """Check one refund's answer against what was left (between ``low`` and the model's)."""
        high = p.captured - p.refunded
        status, code = response.status_code, _code(response)
        if status == 201:
            body = response.json()
            got = int(body["amount"])
            if amount is not None:
                assert got == amount, _why(response)
            assert 0 < got <= high, f"refunded {got}, only {high} was left: {_why(response)}"
            assert body["status"] == "succeeded", _why(response)  # the sandbox's always do
            p.refunds_confirmed[key] = got
            self.stats.refunds_confirmed += 1
            return "refunded"
        if (status, code) == (400, "refund_exceeds_captured"):
            wanted = low if amount is None else amount
            assert wanted > low or low <= 0, f"{wanted} of {low} left was refused: {_why(response)}"
            return "refused"
        if (status, code) == (409, "payment_unexpected_state"):
            # the payment is "refunded" by now: possible only if the rest may be gone (a racing
            # refund took it all and was booked before this one was looked at)
            assert low <= 0, f"refused as if fully refunded, {low} left: {_why(response)}"
            return "refused"
        assert (status, code) == (504, "psp_outcome_unknown"), _why(response)
        p.refunds_maybe[key] = high if amount is None else amount
        p.unresolved.append(key)
        self.stats.unknown_outcomes += 1
        return "unknown"

    @precondition(lambda self: bool(self._refundable()))
    @rule(data=st.data(), psp_times_out=TIMES_OUT)
    def refund(self, data: st.DataObject, psp_times_out: bool) -> None:
        self._step("refund")
        p = self.payments[data.draw(st.sampled_from(self._refundable()), label="payment")]
        self._refresh(p)
        high = p.captured - p.refunded
        if high <= 0 or p.status not in ("succeeded", "partially_refunded"):
            return
        low = high - p.in_doubt()
        amount = data.draw(st.none() | st.integers(1, high + 1), label="amount")
        key = self._key("refund")
        body: dict[str, Any] = {"payment": p.id}
        if amount is not None:
            body["amount"] = amount
        response = self._post("/v1/refunds", body, key, p.merchant, times_out=psp_times_out)
        outcome = self._judge_refund(p, key, amount, response, low)
        if amount is not None and amount > high:
            assert outcome == "refused", f"over-refund of {amount} (left {high}): {_why(response)}"
        if outcome == "refunded":
            self._observe(p, response.json()["payment"])
        if outcome == "unknown" and data.draw(st.booleans(), label="the client retries now"):
            self._retry_refund(p, key)

    @precondition(
        lambda self: bool(self._refundable(least=2)) and self.budget["two_refunds_at_once"] > 0
    )
    @rule(data=st.data())
    def two_refunds_at_once(self, data: st.DataObject) -> None:
        """Two partial refunds of one payment, sent at the same moment with different keys.

        Either both fit what is left (both must succeed), or they are of the
        same amount, which may be more than is left for two: then exactly one
        must succeed. Which one wins the race is chance; with equal amounts,
        the rest of the run is the same whichever it was, so a seed replays.
        """
        self._step("two_refunds_at_once")
        self.budget["two_refunds_at_once"] -= 1
        self.stats.concurrent_refund_pairs += 1
        p = self.payments[data.draw(st.sampled_from(self._refundable(least=2)), label="payment")]
        self._refresh(p)
        high = p.captured - p.refunded
        if high < 2 or p.status not in ("succeeded", "partially_refunded"):
            return
        low = high - p.in_doubt()
        if low >= 2 and data.draw(st.booleans(), label="both fit"):
            first = data.draw(st.integers(1, low - 1), label="amount 1")
            amounts = [first, data.draw(st.integers(1, low - first), label="amount 2")]
        else:
            amounts = [data.draw(st.integers(1, high), label="amount, each")] * 2
        keys = [self._key("refund-a"), self._key("refund-b")]
        api_key = self.merchants[p.merchant].api_key
        start = threading.Barrier(2)

        def send(i: int) -> httpx.Response:
            start.wait(timeout=30)
            body = {"payment": p.id, "amount": amounts[i]}
            return self.system.post("/v1/refunds", body, key=keys[i], api_key=api_key)

        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(send, (0, 1)))
        for i in (0, 1):  # a clash is answered "retry": a client retries with the same key
            for _ in range(5):
                if (answers[i].status_code, _code(answers[i])) not in (
                    (409, "payment_busy"),
                    (409, "request_in_progress"),
                    (503, "database_busy"),
                ):
                    break
                time.sleep(0.05)
                body = {"payment": p.id, "amount": amounts[i]}
                answers[i] = self.system.post("/v1/refunds", body, key=keys[i], api_key=api_key)
            self._record("/v1/refunds", {"payment": p.id, "amount": amounts[i]}, keys[i],
                         p.merchant, answers[i])  # fmt: skip
        outcomes = [
            self._judge_refund(p, keys[i], amounts[i], answers[i], low - amounts[1 - i])
            for i in (0, 1)
        ]
        why = f"{amounts} of {high} left on {p.id}: {[_why(a) for a in answers]}"
        # (an "unknown" is a PSP call that timed out: on a loaded machine, any call may)
        if sum(amounts) <= low:
            assert "refused" not in outcomes, f"both fit, one was refused: {why}"
        if sum(amounts) > high:
            assert outcomes.count("refunded") < 2, f"both refunded, more than was left: {why}"
        if sum(amounts) > high and amounts[0] <= low:
            assert outcomes.count("refused") < 2, f"one fits, both were refused: {why}"
        self._refresh(p)

    @precondition(lambda self: any(p.unresolved for p in self.payments.values()))
    @rule(data=st.data())
    def retry_unknown_refund(self, data: st.DataObject) -> None:
        """Later (after webhooks, say), the client retries a refund that answered 504."""
        self._step("retry_unknown_refund")
        candidates = [(p.id, k) for p in self.payments.values() for k in p.unresolved]
        payment_id, key = data.draw(st.sampled_from(candidates), label="refund")
        self._retry_refund(self.payments[payment_id], key)

    def _retry_refund(self, p: Tracked, key: str) -> None:
        """The same key, the same body: the refund must converge on what the PSP did."""
        self.stats.unknown_refunds_retried += 1
        [sent] = [s for s in self.sent if s.key == key]
        response = self.system.post(sent.path, sent.body, key=key, api_key=sent.api_key)
        self._record(sent.path, sent.body, key, p.merchant, response)
        if (response.status_code, _code(response)) == (504, "psp_outcome_unknown"):
            return  # the retry's own PSP call timed out (a loaded machine): still unknown
        assert response.status_code == 201, _why(response)
        body = response.json()
        assert body["amount"] <= p.refunds_maybe[key], _why(response)
        p.refunds_confirmed[key] = body["amount"]
        p.unresolved.remove(key)
        self._refresh(p)

    @precondition(lambda self: bool(self._stored()) and self.budget["replay_key"] > 0)
    @rule(data=st.data(), same_body=st.booleans())
    def replay_key(self, data: st.DataObject, same_body: bool) -> None:
        """A key used before, with the same body (the stored answer, byte for byte) or not (422)."""
        self._step("replay_key")
        self.budget["replay_key"] -= 1
        self.stats.replays += 1
        s = data.draw(st.sampled_from(self._stored()), label="request")
        if same_body:
            response = self.system.post(s.path, s.body, key=s.key, api_key=s.api_key)
            assert response.status_code == s.status, _why(response)
            assert response.content == s.content, f"replay differs: {_why(response)}"
            assert response.headers.get("idempotent-replayed") == "true", _why(response)
            return
        body = dict(s.body)  # another *valid* request: an invalid one is a 400 first
        if "amount" in body:
            body["amount"] = int(body["amount"]) + 1
        elif s.path.endswith(("/capture", "/v1/refunds")):
            body["amount"] = 1
        else:  # a cancel reads no body, so any other body is another request
            body["note"] = "another request"
        response = self.system.post(s.path, body, key=s.key, api_key=s.api_key)
        refused = (response.status_code, _code(response))
        assert refused == (422, "idempotency_key_reused"), _why(response)

    # -- the network and operations --------------------------------------------

    @precondition(
        lambda self: any(p.unresolved or p.status in UNSETTLED for p in self.payments.values())
    )
    @rule()
    def janitor(self) -> None:
        self._step("janitor")
        self._janitor()

    def _janitor(self) -> int:
        """Run the janitor; returns how many items it left for later because the PSP was slow.

        Any other failure is a bug: the janitor must settle whatever the PSP
        can tell it about.
        """
        run = self.system.runtime.service.run_janitor(min_age_s=0)
        bugs = [f for f in run.failures if not f[1].startswith(TRANSIENT)]
        assert not bugs, f"the janitor failed on {bugs}"
        with self.system.runtime.sessions() as session:
            for p in self.payments.values():
                if p.unresolved:
                    ids = {refund_id_for(self.merchants[p.merchant].id, k): k for k in p.unresolved}
                    settled = session.scalars(
                        sa.select(Refund.id).where(
                            Refund.id.in_(ids), Refund.status.not_in(("pending", "unknown"))
                        )
                    )
                    for refund_id in settled:
                        p.unresolved.remove(ids[refund_id])
        for p in self.payments.values():
            if p.status in UNSETTLED or p.refunds_maybe:
                self._refresh(p)
        return len(run.failures) - len(bugs)

    # -- the PSP's webhooks ----------------------------------------------------

    @precondition(lambda self: bool(self.payments))
    @rule(
        data=st.data(),
        order=st.sampled_from(ORDERS),
        seed=st.integers(0, 2**16),
        duplicate=st.booleans(),
        every_one=st.booleans(),
    )
    def release_webhooks(
        self, data: st.DataObject, order: Order, seed: int, duplicate: bool, every_one: bool
    ) -> None:
        """Every held event (FIFO, LIFO or shuffled, maybe twice each), or a few, in drawn order."""
        self._step("release_webhooks")
        url, key = self.system.psp_url, self.system.psp_key
        if every_one:
            random_seed = seed if order == "random" else None
            sent = control.release_webhooks(
                url, key, order=order, seed=random_seed, duplicate=duplicate
            )
            self._delivered(sent)
            return
        held = [h["event"] for h in control.held_webhooks(url, key)]
        if held:
            few = st.lists(st.sampled_from(held), min_size=1, max_size=3, unique=True)
            chosen = data.draw(few, label="events")
            self._delivered(control.release_webhooks(url, key, chosen, duplicate=duplicate))

    @precondition(lambda self: bool(self.delivered) and self.budget["redeliver_late"] > 0)
    @rule(data=st.data())
    def redeliver_late(self, data: st.DataObject) -> None:
        """An event delivered before, again, now: the inbox must make it a no-op."""
        self._step("redeliver_late")
        self.budget["redeliver_late"] -= 1
        event = data.draw(st.sampled_from(self.delivered), label="event")
        self._delivered(control.redeliver(self.system.psp_url, self.system.psp_key, event))

    # -- invariants --------------------------------------------------------------

    @invariant()
    def the_books_hold(self) -> None:
        """Every journal balances, no finished payment holds, balances equal payments' net."""
        with self.system.runtime.sessions() as session:
            self._books_hold(session)

    def _books_hold(self, session: Session) -> None:
        """`check_books`, on this example's merchants and payments.

        The database is shared by the examples of a run: an earlier example
        that failed must not fail this one (hypothesis replays examples to
        shrink them, and would chase a ghost).
        """
        report = check_books(session, int(time.time()))
        ours = {m.id for m in self.merchants.values()}

        def mine(item: object) -> bool:
            if isinstance(item, str):  # a payment id, or a journal id: "pay_…:capture"
                return item.split(":")[0] in self.payments
            merchant = getattr(item, "merchant_id", None)
            return merchant is None or merchant in ours  # a break of unknown shape counts

        breaks = {
            f.name: found
            for f in fields(report)
            if (found := [item for item in getattr(report, f.name) if mine(item)])
        }
        assert not breaks, breaks

    @precondition(lambda self: self.counter - self.settled_at >= SETTLE_EVERY)
    @rule()
    def settle_and_check(self) -> None:
        """Mid-run, now and then: settle everything and check it all, then carry on."""
        self._step("settle_and_check")
        self._settle()
        self._full_check()
        self.settled_at = self.counter

    def teardown(self) -> None:
        self.system.clear_faults()
        self._settle()
        self._full_check()

    def _settle(self) -> None:
        """Release every held webhook and run the janitor, until nothing is left held."""
        url, key = self.system.psp_url, self.system.psp_key
        for _ in range(5):
            self._delivered(control.release_webhooks(url, key, order="fifo"))
            later = self._janitor()
            if not later and not control.held_webhooks(url, key):
                return
        raise AssertionError(
            f"not settled after 5 rounds: held {control.held_webhooks(url, key)}, "
            f"janitor left {later} for later"
        )

    def _full_check(self) -> None:
        self.stats.full_checks += 1
        system = self.system
        with system.runtime.sessions() as session:
            self._books_hold(session)
            ours = [m.id for m in self.merchants.values()]
            left = session.execute(
                sa.select(Refund.id, Refund.status).where(
                    Refund.merchant_id.in_(ours), Refund.status.in_(("pending", "unknown"))
                )
            ).all()
        assert not left, f"refunds left unsettled after the janitor: {left}"
        net: dict[str, Counter[str]] = defaultdict(Counter)
        for p in self.payments.values():
            view = self._refresh(p)
            assert p.status not in UNSETTLED, f"{p.id} still {p.status} after settling"
            net[p.merchant][p.currency] += view["net"]
            self._matches_psp(p, view)
        for name, merchant in self.merchants.items():
            self._balance_is_net(merchant, net[name])
            self._psp_has_one_intent_per_payment(name, merchant)
        for (_merchant, key), ids in self.created.items():
            assert len(ids) == 1, f"key {key} made payments {ids}"
        if self.payments:  # another merchant's payment is not found
            p = next(iter(self.payments.values()))
            other = self.merchants["b" if p.merchant == "a" else "a"].api_key
            assert system.get(f"/v1/payments/{p.id}", api_key=other).status_code == 404
        self._reconciles()

    def _matches_psp(self, p: Tracked, view: dict[str, Any]) -> None:
        if p.intent is None:
            assert p.status == "failed", f"{p.id} is {p.status} with no PaymentIntent"
            return
        intent = self.system.sdk.v1.payment_intents.retrieve(
            p.intent, params={"expand": ["latest_charge.balance_transaction"]}
        ).to_dict()
        assert intent["metadata"]["payment_id"] == p.id, intent["metadata"]
        assert p.status in AGREES.get(intent["status"], set()), (
            f"{p.id} is {p.status}, the PSP says {intent['status']}"
        )
        charge = intent.get("latest_charge") or {}
        captured = int(charge.get("amount_captured") or 0) if charge.get("captured") else 0
        txn = charge.get("balance_transaction")
        fee = int(txn["fee"]) if isinstance(txn, dict) else 0
        psp = (captured, int(charge.get("amount_refunded") or 0), fee)
        assert (p.captured, p.refunded, p.fee) == psp, (
            f"{p.id}: ours (captured, refunded, fee) = {(p.captured, p.refunded, p.fee)}, "
            f"the PSP's = {psp}"
        )
        if p.capture_confirmed is not None:
            assert p.captured == p.capture_confirmed, view
        confirmed = sum(p.refunds_confirmed.values())
        doubtful = sum(v for k, v in p.refunds_maybe.items() if k not in p.refunds_confirmed)
        assert confirmed <= p.refunded <= confirmed + doubtful, (
            f"{p.id}: refunded {p.refunded}; confirmed {p.refunds_confirmed}, "
            f"unknown {p.refunds_maybe}"
        )

    def _balance_is_net(self, merchant: Merchant, expected: Counter[str]) -> None:
        response = self.system.get("/v1/balance", api_key=merchant.api_key)
        assert response.status_code == 200, _why(response)
        body = response.json()
        books: Counter[str] = Counter()
        for part in ("available", "pending"):
            for row in body[part]:
                books[row["currency"]] += int(row["amount"])
        currencies = set(books) | set(expected)
        assert all(books[c] == expected[c] for c in currencies), (
            f"merchant {merchant.id}: balance {dict(books)}, payments' net {dict(expected)}"
        )

    def _psp_has_one_intent_per_payment(self, name: str, merchant: Merchant) -> None:
        query = f"metadata['merchant_id']:'{merchant.id}'"
        found = self.system.sdk.v1.payment_intents.search(params={"query": query, "limit": 100})
        assert not found.has_more
        per_payment = Counter(str(i.metadata["payment_id"]) for i in found.data)
        doubled = {k: n for k, n in per_payment.items() if n > 1}
        assert not doubled, f"payments with more than one PaymentIntent: {doubled}"
        ours = {p.id for p in self.payments.values() if p.merchant == name}
        assert set(per_payment) <= ours, (
            f"intents for payments we never made: {set(per_payment) - ours}"
        )
        with_intent = {p.id for p in self.payments.values() if p.merchant == name and p.intent}
        assert with_intent <= set(per_payment), with_intent - set(per_payment)
        response = httpx.get(
            f"{self.system.psp_url}/_sandbox/charges/duplicates",
            params={"metadata_key": "payment_id", "run_key": "merchant_id", "run": merchant.id},
            auth=(self.system.psp_key, ""),
            timeout=30,
        )
        response.raise_for_status()
        duplicates = response.json()
        assert duplicates["duplicate_charges"] == 0, duplicates

    def _reconciles(self) -> None:
        """Ledger against the PSP's balance transactions: no break but timing."""
        books = [
            r for r in ledger_from_db(self.system.runtime.sessions) if r.payment_id in self.payments
        ]
        report = reconcile(
            sorted(books, key=lambda r: r.reference),
            sorted(psp_from_api(self.system.checker_psp), key=lambda r: r.reference),
            [],  # no payouts: the bank leg is empty
            cutoff=int(time.time()),
        )
        breaks = [
            b
            for b in report.unexplained
            if b.cls is not BreakClass.MISSING_IN_BANK and b.source in ("ledger", "psp")
        ]
        assert not breaks, breaks[:5]


def machine_for(
    system: SystemUnderCheck, stats: ModelStats, *, run: str | None = None
) -> type[PaymentsModel]:
    """`PaymentsModel` bound to ``system``, counting into ``stats``."""
    return type(
        "PaymentsModelCheck",
        (PaymentsModel,),
        {"system": system, "stats": stats, "run": run or uuid.uuid4().hex[:8]},
    )

"""The proof (issue 13): a bounded model check of the real system, on SQLite and PostgreSQL.

`tests.model_check_machine.PaymentsModel` drives the real API over HTTP and
the real PSP sandbox, and checks the money after every step and after
settling (its docstring lists the rules and the invariants). Here it runs a
bounded number of examples and steps with a fixed seed, so a fresh clone
runs exactly the same sequences; ``nox -s bench -- model_check`` runs a long
check over several seeds.

Every example starts with two fresh merchants and a fresh sandbox account
(its webhooks held); the database is shared by the examples of one test, so
every check is scoped to the example's merchants and payments, and nothing a
failed example left behind can fail the next one while hypothesis shrinks.

The run is deterministic: the same seed draws the same steps, on SQLite and
on PostgreSQL alike (the model draws payments in creation order, and two
racing refunds are either both meant to succeed or of equal amounts, so which
one wins changes nothing that follows). The test also checks that the bounded
run exercised every rule; if a change to the system or the model starves one,
it says which, and a different ``SEED`` or more ``STEPS`` restores it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from hypothesis import HealthCheck, seed, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy.engine import Engine

from payment_systems.core.ledger_checks import check_books
from payment_systems.integrations.psp_sandbox import SandboxServer, control
from tests.model_check_machine import ModelStats, machine_for, reachable, running_system

SEED = 20_261_204
EXAMPLES = 7
STEPS = 16
EVERY_RULE = {
    "create",
    "capture",
    "cancel",
    "refund",
    "two_refunds_at_once",
    "janitor",
    "replay_key",
    "release_webhooks",
    "redeliver_late",
    "settle_and_check",
    "refused_command",
}


def bounded(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,  # nothing replayed from a local cache: a fresh clone runs the same
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_any_sequence_of_payments_timeouts_and_webhooks_leaves_the_books_true(
    any_engine: Engine,
    redis_client: redis.Redis,
    psp_sandbox: SandboxServer,
    record_property: Callable[[str, object], None],
) -> None:
    stats = ModelStats()
    started = time.monotonic()
    with running_system(any_engine, redis_client, psp_sandbox.url) as system:
        machine = seed(SEED)(machine_for(system, stats))
        run_state_machine_as_test(machine, settings=bounded(EXAMPLES, STEPS))
    summary = {
        "database": any_engine.dialect.name,
        "seed": SEED,
        "seconds": round(time.monotonic() - started, 1),
        **stats.as_json(),
    }
    print(f"model check: {summary}")
    record_property("model_check", summary)
    assert stats.examples >= EXAMPLES
    assert stats.steps >= EXAMPLES * STEPS // 2  # it explored, not just started
    assert stats.full_checks >= EXAMPLES
    assert stats.psp_timeouts > 0 and stats.unknown_outcomes > 0 and stats.webhooks_delivered > 0
    never_ran = EVERY_RULE - set(stats.rules)
    assert not never_ran, f"rules the bounded check never ran: {sorted(never_ran)}"


@pytest.mark.parametrize(
    ("before", "after"),
    [("requires_capture", "canceled"), ("unknown", "canceled"), ("succeeded", "refunded")],
)
def test_the_model_allows_forward_moves(before: str, after: str) -> None:
    assert after in reachable(before)


@pytest.mark.parametrize(
    ("before", "after"),
    [("succeeded", "requires_capture"), ("canceled", "succeeded"), ("refunded", "succeeded")],
)
def test_the_model_refuses_backward_moves(before: str, after: str) -> None:
    assert after not in reachable(before)


# -- what the model check found -------------------------------------------------------


def test_a_cancel_whose_outcome_was_unknown_settles_as_canceled(
    any_engine: Engine, redis_client: redis.Redis, psp_sandbox: SandboxServer
) -> None:
    """The model check's first failure, shrunk: a manual payment, a cancel that times out.

    The PSP canceled the authorization; we recorded ``unknown``. Asking the
    PSP then yielded ``PaymentCanceled``, which the state machine refused
    from ``unknown``: the janitor failed on the payment at every run, the
    PSP's ``payment_intent.canceled`` webhook was answered 409 until the PSP
    gave up, and the authorization hold stayed open in the books. (Fixed in
    4705f1f, found by review at the same time.)
    """
    with running_system(any_engine, redis_client, psp_sandbox.url) as system:
        _merchant, api_key = system.new_merchant("Cancels")
        body = {"amount": 2_000, "currency": "usd", "payment_method": "pm_card_visa",
                "capture_method": "manual"}  # fmt: skip
        created = system.post("/v1/payments", body, key="order-1", api_key=api_key)
        assert created.json()["status"] == "requires_capture"
        payment_id = created.json()["id"]
        system.psp_times_out_next_write()
        try:
            canceled = system.post(f"/v1/payments/{payment_id}/cancel", {}, key="void-1",
                                   api_key=api_key)  # fmt: skip
        finally:
            system.clear_faults()
        assert (canceled.status_code, canceled.json()["status"]) == (200, "unknown")
        run = system.runtime.service.run_janitor(min_age_s=0)
        webhooks = control.release_webhooks(system.psp_url, system.psp_key)
        after = system.get(f"/v1/payments/{payment_id}", api_key=api_key).json()
        with system.runtime.sessions() as session:
            holds = check_books(session, int(time.time())).open_holds_on_finished_payments
    assert run.failures == []
    assert [w["status"] for w in webhooks] == [200] * len(webhooks)
    assert after["status"] == "canceled"
    assert payment_id not in holds


def test_capturing_more_than_was_authorized_is_refused_as_a_client_error(
    sqlite_engine: Engine, redis_client: redis.Redis, psp_sandbox: SandboxServer
) -> None:
    """Found while widening the model's capture rule: over-capture is the client's mistake.

    A capture of more than the authorization is answered like an over-refund
    (a 4xx naming the amounts), not as a failure of ours or of the PSP's
    (a 5xx tells the client to retry, which can never succeed).
    """
    with running_system(sqlite_engine, redis_client, psp_sandbox.url) as system:
        _merchant, api_key = system.new_merchant("Over-captures")
        body = {"amount": 1_000, "currency": "usd", "payment_method": "pm_card_visa",
                "capture_method": "manual"}  # fmt: skip
        payment = system.post("/v1/payments", body, key="order-1", api_key=api_key).json()
        over = system.post(f"/v1/payments/{payment['id']}/capture", {"amount": 1_001},
                           key="capture-1", api_key=api_key)  # fmt: skip
        after = system.get(f"/v1/payments/{payment['id']}", api_key=api_key).json()
    assert after["status"] == "requires_capture"  # holds today: nothing was captured
    assert 400 <= over.status_code < 500, over.text

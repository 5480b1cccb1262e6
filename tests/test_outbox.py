"""The transactional outbox under crashes and failing handlers: real processes, databases, Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any, cast

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import CreatePayment, PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import OutboxMessage
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money
from payment_systems.patterns.outbox import (
    ConsumerMetrics,
    IdempotentConsumer,
    OutboxRelay,
    partition_of,
)

EFFECTS = "CREATE TABLE effects (event_id VARCHAR(80), aggregate_id VARCHAR(40), version INTEGER)"


def record_effect(session: Session, message: dict[str, Any]) -> None:
    """The consumer's side effect: one row per application (so duplicates would show)."""
    session.execute(
        sa.text("INSERT INTO effects VALUES (:e, :a, :v)"),
        {
            "e": message["event_id"],
            "a": message["aggregate_id"],
            "v": message["payload"]["version"],
        },
    )


@pytest.fixture
def db(pg_engine: Engine) -> Engine:
    upgrade(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(sa.text(EFFECTS))
    return pg_engine


@pytest.fixture
def stream() -> str:
    return f"test:{uuid.uuid4().hex}"


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _effects(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event_id, aggregate_id, version FROM effects"))
        return [(str(e), str(a), int(v)) for e, a, v in rows]


def _entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    """Every entry of ``stream``, decoded."""
    reply = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in reply]


def _outbox_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(OutboxMessage.event_id)).scalars())


def _consumer(
    client: redis.Redis, engine: Engine, stream: str, name: str = "c1", **kw: Any
) -> IdempotentConsumer:
    return IdempotentConsumer(
        client, session_factory(engine), group="ledger-export", name=name, handler=record_effect,
        stream=stream, **kw,
    )  # fmt: skip


def _drain(consumer: IdempotentConsumer) -> None:
    while consumer.consume_once(block_ms=50):
        pass


def _run(code: str) -> int:
    """Run ``code`` in a fresh interpreter; returns its exit code (-9 when it SIGKILLs itself)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], timeout=120).returncode


def _payments(db: Engine, sandbox: SandboxServer, count: int) -> PaymentService:
    sessions = session_factory(db)
    with unit_of_work(sessions) as session:
        merchant, _ = create_merchant(session, "Outbox")
    service = PaymentService(sessions, PSPClient("sk_test_" + uuid.uuid4().hex, sandbox.url))
    for i in range(count):
        service.create(merchant.id, f"k{i}", CreatePayment(Money(1000 + i, "USD"), "pm_card_visa"))
    return service


def test_every_payment_event_gets_an_outbox_row_in_the_same_transaction(
    db: Engine, psp_sandbox: SandboxServer
) -> None:
    service = _payments(db, psp_sandbox, 2)
    with db.connect() as conn:
        events = (
            conn.execute(sa.text("SELECT payment_id || ':' || version FROM payment_events"))
            .scalars()
            .all()
        )
    assert set(events) == _outbox_ids(db)
    del service


def test_relay_and_consumer_deliver_each_event_once_in_order(
    db: Engine, psp_sandbox: SandboxServer, redis_client: redis.Redis, stream: str
) -> None:
    _payments(db, psp_sandbox, 3)
    assert OutboxRelay(db, redis_client, stream=stream).relay_once() == len(_outbox_ids(db))
    _drain(_consumer(redis_client, db, stream))
    effects = _effects(db)
    assert sorted(e for e, _, _ in effects) == sorted(_outbox_ids(db))
    for aggregate in {a for _, a, _ in effects}:
        versions = [v for _, a, v in effects if a == aggregate]
        assert versions == sorted(versions)  # per-payment order kept


def test_an_app_killed_after_commit_but_before_publish_loses_nothing(
    db: Engine, psp_sandbox: SandboxServer, redis_client: redis.Redis, stream: str
) -> None:
    sessions = session_factory(db)
    with unit_of_work(sessions) as session:
        merchant, _ = create_merchant(session, "Crash")
    code = f"""
        import os, signal
        from payment_systems.core.payments import CreatePayment, PaymentService
        from payment_systems.database.session import session_factory
        from payment_systems.integrations.stripe_client import PSPClient
        from payment_systems.money import Money
        def crash(point):
            if point == "recorded":
                os.kill(os.getpid(), signal.SIGKILL)  # committed; nothing published yet
        psp = PSPClient("sk_test_{uuid.uuid4().hex}", {psp_sandbox.url!r})
        service = PaymentService(session_factory({_url(db)!r}), psp, crash_point=crash)
        service.create({merchant.id!r}, "k", CreatePayment(Money(500, "USD"), "pm_card_visa"))
    """
    assert _run(code) == -9
    assert _outbox_ids(db)  # the events survived the crash, in the outbox
    OutboxRelay(db, redis_client, stream=stream).relay_once()
    _drain(_consumer(redis_client, db, stream))
    assert sorted(e for e, _, _ in _effects(db)) == sorted(_outbox_ids(db))


def test_a_relay_killed_after_xadd_publishes_twice_and_the_consumer_applies_once(
    db: Engine, psp_sandbox: SandboxServer, redis_client: redis.Redis, redis_url: str, stream: str
) -> None:
    _payments(db, psp_sandbox, 2)
    code = f"""
        import os, signal, redis
        from payment_systems.infra import create_engine
        from payment_systems.patterns.outbox import OutboxRelay
        def crash(point):
            if point == "after_xadd":
                os.kill(os.getpid(), signal.SIGKILL)  # published, not yet marked
        OutboxRelay(create_engine({_url(db)!r}), redis.Redis.from_url({redis_url!r}),
                    stream={stream!r}, crash_point=crash).relay_once()
    """
    assert _run(code) == -9
    first_pass = redis_client.xlen(stream)
    OutboxRelay(db, redis_client, stream=stream).relay_once()
    assert redis_client.xlen(stream) > first_pass  # duplicates really are in the stream
    _drain(_consumer(redis_client, db, stream))
    effects = [e for e, _, _ in _effects(db)]
    assert sorted(effects) == sorted(_outbox_ids(db))  # each applied exactly once


def test_a_consumer_killed_mid_batch_is_taken_over_by_another(
    db: Engine, psp_sandbox: SandboxServer, redis_client: redis.Redis, redis_url: str, stream: str
) -> None:
    _payments(db, psp_sandbox, 2)
    OutboxRelay(db, redis_client, stream=stream).relay_once()
    code = f"""
        import itertools, os, signal, redis
        from payment_systems.database.session import session_factory
        from payment_systems.patterns.outbox import IdempotentConsumer
        from tests.test_outbox import record_effect
        seen = itertools.count()
        def crash(point):
            if point == "after_commit" and next(seen) == 1:
                os.kill(os.getpid(), signal.SIGKILL)  # 2nd entry committed, not acked
        IdempotentConsumer(redis.Redis.from_url({redis_url!r}), session_factory({_url(db)!r}),
                           group="ledger-export", name="doomed", handler=record_effect,
                           stream={stream!r}, crash_point=crash).consume_once()
    """
    assert _run(code) == -9
    assert len(_effects(db)) == 2  # two applied before the crash
    survivor = _consumer(redis_client, db, stream, name="survivor", min_idle_ms=0)
    _drain(survivor)
    assert sorted(e for e, _, _ in _effects(db)) == sorted(_outbox_ids(db))
    assert redis_client.xpending(stream, "ledger-export")["pending"] == 0


def test_several_relays_at_once_keep_each_payments_events_in_order(
    db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    with unit_of_work(session_factory(db)) as session:
        for n in range(400):
            aggregate = f"pay_{n % 20}"
            session.add(OutboxMessage(
                event_id=f"{aggregate}:{n // 20 + 1}", aggregate_id=aggregate,
                partition=partition_of(aggregate),
                type="PaymentTest", payload={"version": n // 20 + 1},
            ))  # fmt: skip
    relays = [OutboxRelay(db, redis_client, stream=stream, batch_size=7) for _ in range(3)]

    def drain(relay: OutboxRelay) -> None:
        while relay.relay_once():
            pass

    threads = [threading.Thread(target=drain, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = [json.loads(f["payload"])["version"] for f in _entries(redis_client, stream)]
    by_aggregate: dict[str, list[int]] = {}
    for fields in _entries(redis_client, stream):
        by_aggregate.setdefault(fields["aggregate_id"], []).append(
            int(json.loads(fields["payload"])["version"])
        )
    assert len(published) == 400
    assert all(versions == sorted(versions) for versions in by_aggregate.values())


# -- consumer failures: redelivery and the dead-letter stream ---------------------------

RECEIPTS = "CREATE TABLE receipts (aggregate_id VARCHAR(40) PRIMARY KEY)"


@pytest.fixture
def any_db(any_engine: Engine) -> Engine:
    """A migrated database (SQLite and Postgres) with the test handlers' tables."""
    upgrade(any_engine)
    with any_engine.begin() as conn:
        conn.execute(sa.text(EFFECTS))
        conn.execute(sa.text(RECEIPTS))
    return any_engine


def _xadd(client: redis.Redis, stream: str, aggregate: str, version: int) -> str:
    """Publish one event as the relay does; returns its event id."""
    event_id = f"{aggregate}:{version}"
    fields = {
        "event_id": event_id, "aggregate_id": aggregate, "type": "PaymentTest",
        "payload": json.dumps({"version": version}),
    }  # fmt: skip
    client.xadd(stream, fields)  # type: ignore[arg-type]
    return event_id


def send_receipt(session: Session, message: dict[str, Any]) -> None:
    """A handler with its own constraint: one receipt per payment (a bug for a 2nd event)."""
    record_effect(session, message)
    session.execute(sa.text("INSERT INTO receipts VALUES (:a)"), {"a": message["aggregate_id"]})


def _inbox(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT event_id FROM consumer_inbox")).scalars())


def _pending(client: redis.Redis, stream: str) -> int:
    return int(client.xpending(stream, "ledger-export")["pending"])


def _dead(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    return _entries(client, f"{stream}:dead")


def test_handler_integrity_error_is_not_acknowledged_as_duplicate(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    with any_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO receipts VALUES ('pay_1')"))  # the handler will clash
    event = _xadd(redis_client, stream, "pay_1", 1)
    metrics = ConsumerMetrics()
    consumer = IdempotentConsumer(
        redis_client, session_factory(any_db), group="ledger-export", name="c1",
        handler=send_receipt, stream=stream, metrics=metrics,
    )  # fmt: skip
    assert consumer.consume_once(block_ms=50) == 1
    assert _pending(redis_client, stream) == 1  # not acknowledged: still owed
    assert event not in _inbox(any_db)  # a retry must not mistake it for a duplicate
    assert _effects(any_db) == []  # the handler's partial work was rolled back
    assert (
        metrics.registry.get_sample_value(
            "outbox_consumer_failures_total", {"consumer": "ledger-export"}
        )
        == 1
    )
    assert _dead(redis_client, stream) == []  # one failure is not poison


def test_failed_message_is_redelivered_and_applied_once(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    first = _xadd(redis_client, stream, "pay_1", 1)
    second = _xadd(redis_client, stream, "pay_2", 1)
    calls: list[str] = []

    def flaky(session: Session, message: dict[str, Any]) -> None:
        calls.append(message["event_id"])
        record_effect(session, message)  # written, then the failure must undo it
        if calls.count(message["event_id"]) == 1 and message["event_id"] == first:
            raise ConnectionError("downstream blipped")

    # min_idle_ms is long: the retry comes from this member's own pending list,
    # not from the takeover of a dead member's entries
    consumer = IdempotentConsumer(
        redis_client, session_factory(any_db), group="ledger-export", name="c1",
        handler=flaky, stream=stream, min_idle_ms=60_000, retry_base_ms=0,
    )  # fmt: skip
    _drain(consumer)
    assert calls == [first, second, first]
    assert sorted(e for e, _, _ in _effects(any_db)) == sorted([first, second])
    assert _pending(redis_client, stream) == 0
    assert _dead(redis_client, stream) == []


def test_a_failed_message_waits_for_its_backoff_before_the_retry(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    event = _xadd(redis_client, stream, "pay_1", 1)
    calls: list[str] = []

    def fails_once(session: Session, message: dict[str, Any]) -> None:
        calls.append(message["event_id"])
        if len(calls) == 1:
            raise RuntimeError("boom")
        record_effect(session, message)

    consumer = IdempotentConsumer(
        redis_client, session_factory(any_db), group="ledger-export", name="c1",
        handler=fails_once, stream=stream, retry_base_ms=300,
    )  # fmt: skip
    consumer.consume_once(block_ms=10)
    assert consumer.consume_once(block_ms=10) == 0  # a broken handler is not hammered
    assert len(calls) == 1
    time.sleep(0.35)
    assert consumer.consume_once(block_ms=10) == 1
    assert [e for e, _, _ in _effects(any_db)] == [event]
    assert _pending(redis_client, stream) == 0


def test_poison_message_goes_to_dead_letter_after_n_attempts_and_is_counted(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    poison = _xadd(redis_client, stream, "pay_1", 1)
    healthy = _xadd(redis_client, stream, "pay_2", 1)
    attempts: list[str] = []

    def rejects_poison(session: Session, message: dict[str, Any]) -> None:
        if message["event_id"] == poison:
            attempts.append(poison)
            raise ValueError("unknown currency XXX")
        record_effect(session, message)

    metrics = ConsumerMetrics()
    consumer = IdempotentConsumer(
        redis_client, session_factory(any_db), group="ledger-export", name="c1",
        handler=rejects_poison, stream=stream, max_attempts=3, retry_base_ms=0,
        metrics=metrics,
    )  # fmt: skip
    _drain(consumer)
    assert len(attempts) == 3
    [dead] = _dead(redis_client, stream)
    assert dead["event_id"] == poison
    assert dead["error"] == "ValueError: unknown currency XXX"
    assert (dead["group"], dead["consumer"], dead["attempts"]) == ("ledger-export", "c1", "3")
    assert json.loads(dead["payload"]) == {"version": 1}  # replayable as published
    assert _pending(redis_client, stream) == 0  # released from the main stream
    assert [e for e, _, _ in _effects(any_db)] == [healthy]  # the rest kept flowing
    assert poison not in _inbox(any_db)
    sample = metrics.registry.get_sample_value
    assert sample("outbox_dead_letters_total", {"consumer": "ledger-export"}) == 1
    assert sample("outbox_consumer_failures_total", {"consumer": "ledger-export"}) == 3


def test_a_message_that_kills_every_consumer_is_dead_lettered_not_retried_forever(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    event = _xadd(redis_client, stream, "pay_1", 1)
    redis_client.xgroup_create(stream, "ledger-export", id="0")
    reply: Any = redis_client.xreadgroup("ledger-export", "doomed", {stream: ">"}, count=1)
    [[_, [(entry_id, _)]]] = reply
    # as if 3 members each took it and died mid-handler: 3 deliveries, no outcome
    redis_client.xclaim(
        stream, "ledger-export", "doomed", 0, [entry_id], idle=120_000, retrycount=3
    )
    calls: list[str] = []
    metrics = ConsumerMetrics()
    survivor = IdempotentConsumer(
        redis_client, session_factory(any_db), group="ledger-export", name="survivor",
        handler=lambda _s, m: calls.append(m["event_id"]), stream=stream, max_attempts=3,
        metrics=metrics,
    )  # fmt: skip
    _drain(survivor)
    assert calls == []  # not handed a 4th victim
    [dead] = _dead(redis_client, stream)
    assert (dead["event_id"], dead["attempts"]) == (event, "3")
    assert "no outcome" in dead["error"]
    assert _pending(redis_client, stream) == 0
    assert (
        metrics.registry.get_sample_value(
            "outbox_dead_letters_total", {"consumer": "ledger-export"}
        )
        == 1
    )


def test_duplicate_delivery_is_applied_once(
    any_db: Engine, redis_client: redis.Redis, stream: str
) -> None:
    event = _xadd(redis_client, stream, "pay_1", 1)
    _xadd(redis_client, stream, "pay_1", 1)  # the relay published it twice
    consumer = _consumer(redis_client, any_db, stream)
    _drain(consumer)
    _xadd(redis_client, stream, "pay_1", 1)  # and once more, after the first was applied
    _drain(consumer)
    assert [e for e, _, _ in _effects(any_db)] == [event]
    assert _pending(redis_client, stream) == 0  # duplicates are acknowledged
    assert _dead(redis_client, stream) == []

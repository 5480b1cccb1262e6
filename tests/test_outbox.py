"""The transactional outbox under crashes, with real processes, Postgres and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any

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
from payment_systems.patterns.outbox import IdempotentConsumer, OutboxRelay, partition_of

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
        return [
            tuple(r)
            for r in conn.execute(sa.text("SELECT event_id, aggregate_id, version FROM effects"))
        ]  # type: ignore[misc]


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
    published = [json.loads(f[b"payload"])["version"] for _, f in redis_client.xrange(stream)]
    by_aggregate: dict[str, list[int]] = {}
    for _, fields in redis_client.xrange(stream):
        by_aggregate.setdefault(fields[b"aggregate_id"].decode(), []).append(
            int(json.loads(fields[b"payload"])["version"])
        )
    assert len(published) == 400
    assert all(versions == sorted(versions) for versions in by_aggregate.values())

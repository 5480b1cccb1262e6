"""The transactional outbox: publish every committed change, at least once, in order.

**The problem.** A payment commits to the database, then the app publishes
``PaymentCaptured`` to a stream. If the app dies between the two, the event
is lost and every downstream system (ledger export, emails, reconciliation)
silently disagrees. Publishing first is worse: a rollback announces a
change that never happened.

**The pattern.** The event is written to the ``outbox`` table *in the same
transaction* as the change (`PaymentService.apply_events` does it). A relay
polls committed rows, publishes them to a Redis Stream, then marks them
sent. A crash anywhere means a row is published again later, never lost: at
least once. Consumers make that exactly-once *in effect* by remembering the
event ids they applied (`IdempotentConsumer`), in the same transaction as
the effect.

**Order.** Rows are partitioned by ``crc32(payment id) % 16``. A relay takes
a partition only while holding ``pg_try_advisory_xact_lock`` on it, so any
number of relays can run, but each payment's events are published by one
relay at a time, in id order. Within a batch, ``FOR UPDATE SKIP LOCKED``
keeps relays from waiting on each other. (SQLite runs one relay.)

Alternatives: two-phase commit (XA) between the database and the broker
couples their availability and few brokers support it; log tailing
(Debezium reading the WAL) needs no polling and no outbox writes in app
code, but another moving part to operate. The outbox is the simplest that
is correct.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.infra.redis import as_text

PARTITIONS = 16
STREAM = "payments:events"
_LOCK_BASE = 0x0B0C_0000  # advisory lock ids for outbox partitions


def partition_of(aggregate_id: str) -> int:
    """The outbox partition of an aggregate: all its events share one.

    Examples:
        >>> partition_of("pay_123") == partition_of("pay_123")
        True
    """
    return zlib.crc32(aggregate_id.encode()) % PARTITIONS


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _no_crash(_point: str) -> None:
    """Production: nothing. Crash tests inject a hook that kills the process."""


class OutboxRelay:
    """Moves committed outbox rows to a Redis Stream, then marks them published."""

    def __init__(
        self,
        engine: Engine,
        client: redis.Redis,
        *,
        stream: str = STREAM,
        batch_size: int = 100,
        crash_point: Callable[[str], None] = _no_crash,
    ) -> None:
        from payment_systems.database.models import OutboxMessage

        self.engine = engine
        self.client = client
        self.stream = stream
        self.batch_size = batch_size
        self.crash_point = crash_point
        self.table = sa.Table(OutboxMessage.__tablename__, OutboxMessage.metadata)
        self.postgres = engine.dialect.name == "postgresql"

    def relay_once(self) -> int:
        """One pass over every partition this relay can lock; returns rows published."""
        return sum(self._relay_partition(p) for p in range(PARTITIONS))

    def _relay_partition(self, partition: int) -> int:
        t = self.table
        with self.engine.begin() as conn:
            if (
                self.postgres
                and not conn.execute(
                    sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_BASE + partition))
                ).scalar()
            ):
                return 0  # another relay owns this partition right now
            query = (
                sa.select(t.c.id, t.c.event_id, t.c.aggregate_id, t.c.type, t.c.payload)
                .where(t.c.published_at.is_(None), t.c.partition == partition)
                .order_by(t.c.id)
                .limit(self.batch_size)
            )
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return 0
            self._publish(rows)
            self.crash_point("after_xadd")
            self._mark(conn, [row.id for row in rows])
        return len(rows)

    def _publish(self, rows: Sequence[Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            fields = {
                "event_id": row.event_id,
                "aggregate_id": row.aggregate_id,
                "type": row.type,
                "payload": json.dumps(row.payload, sort_keys=True),
            }
            pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
        pipe.execute()

    def _mark(self, conn: Connection, ids: list[int]) -> None:
        conn.execute(
            self.table.update().where(self.table.c.id.in_(ids)).values(published_at=_now())
        )

    def backlog(self) -> tuple[int, float]:
        """(unpublished rows, age in seconds of the oldest): what the metrics report."""
        t = self.table
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(t.c.created_at)).where(
                    t.c.published_at.is_(None)
                )
            ).one()
        age = (_now() - oldest).total_seconds() if oldest is not None else 0.0
        return int(count), age

    def run(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        """Relay until ``stop`` is set; sleeps only when there was nothing to do."""
        while not stop.is_set():
            if self.relay_once() == 0:
                stop.wait(poll_s)


Handler = Callable[[Session, dict[str, Any]], None]


class IdempotentConsumer:
    """A Redis Streams consumer-group member that applies each event once.

    At-least-once delivery means duplicates (a relay that crashed after XADD
    publishes again; a consumer that crashed before XACK is redelivered). The
    consumer records each event id in ``consumer_inbox`` in the *same*
    transaction as the handler's effect, acknowledges with XACK only after
    that commit, and reclaims entries a dead member left pending with
    XAUTOCLAIM.
    """

    def __init__(
        self,
        client: redis.Redis,
        sessions: sessionmaker[Session],
        *,
        group: str,
        name: str,
        handler: Handler,
        stream: str = STREAM,
        min_idle_ms: int = 30_000,
        crash_point: Callable[[str], None] = _no_crash,
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.group = group
        self.name = name
        self.handler = handler
        self.stream = stream
        self.min_idle_ms = min_idle_ms
        self.crash_point = crash_point
        try:
            self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume_once(self, count: int = 100, block_ms: int = 100) -> int:
        """Reclaim stale entries, read new ones, apply each once; returns entries handled."""
        _cursor, claimed, *_ = self.client.xautoclaim(
            self.stream, self.group, self.name, self.min_idle_ms, "0-0", count=count
        )
        entries: list[Any] = list(claimed)
        fresh: Any = self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=count, block=block_ms
        )
        for _stream, messages in fresh or []:
            entries.extend(messages)
        for entry_id, fields in entries:
            self._apply(entry_id, {as_text(k): as_text(v) for k, v in fields.items()})
        return len(entries)

    def _apply(self, entry_id: bytes | str, fields: dict[str, str]) -> None:
        from payment_systems.database.models import ConsumerInbox

        message = {**fields, "payload": json.loads(fields["payload"])}
        try:
            with self.sessions() as session, session.begin():
                session.add(ConsumerInbox(consumer=self.group, event_id=fields["event_id"]))
                session.flush()  # a duplicate fails here, before the handler runs
                self.handler(session, message)
        except IntegrityError:
            pass  # already applied: acknowledging is all that is left to do
        self.crash_point("after_commit")
        self.client.xack(self.stream, self.group, entry_id)

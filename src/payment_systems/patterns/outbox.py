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
the effect. A message whose handler keeps failing is retried with
backoff, then parked in a dead-letter stream and counted: never silently
acknowledged.

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
import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.infra.redis import as_text

PARTITIONS = 16
STREAM = "payments:events"
_LOCK_BASE = 0x0B0C_0000  # advisory lock ids for outbox partitions

log = logging.getLogger(__name__)

# INSERT ... ON CONFLICT DO NOTHING, per supported dialect (the consumer's inbox insert)
_INSERTS: dict[str, Callable[..., Any]] = {"postgresql": pg_insert, "sqlite": sqlite_insert}


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

#: Longest error text kept in a dead letter (a stack of SQL can be kilobytes).
_ERROR_CHARS = 2_000


class ConsumerMetrics:
    """What the consumers in one process count, in one registry.

    Create one per process (or per registry) and hand it to every
    `IdempotentConsumer`: a Prometheus registry refuses a second metric of
    the same name, so each consumer creating its own counters in a shared
    registry would fail. The default is a private registry, so tests and
    scripts never collide.

    ``outbox_dead_letters_total{consumer}`` is the alert: each one is an
    event a downstream system has *not* applied and will not apply until
    someone replays it. ``outbox_consumer_failures_total{consumer}`` rises
    first, on every failed attempt. The label is the consumer group, not the
    member name, so restarts under new names do not multiply the series.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.dead_letters = Counter(
            "outbox_dead_letters",
            "Events moved to the dead-letter stream after max attempts, by consumer group",
            ["consumer"],
            registry=self.registry,
        )
        self.failures = Counter(
            "outbox_consumer_failures",
            "Failed attempts to apply an event (left pending for redelivery), by consumer group",
            ["consumer"],
            registry=self.registry,
        )


class IdempotentConsumer:
    """A Redis Streams consumer-group member that applies each event once, or dead-letters it.

    At-least-once delivery means duplicates (a relay that crashed after XADD
    publishes again; a consumer that crashed before XACK is redelivered). The
    consumer records each event id in ``consumer_inbox`` in the *same*
    transaction as the handler's effect and acknowledges with XACK only after
    that commit.

    **Only the inbox says "duplicate".** The inbox row is inserted with
    ``ON CONFLICT DO NOTHING``: no row inserted means already applied, and
    that is the only way a message is acknowledged without its effect. Any
    error from the handler, its own ``IntegrityError`` included, rolls the
    whole transaction back (inbox row too) and leaves the message pending.
    (Catching ``IntegrityError`` around the handler and acknowledging, as
    this class once did, silently dropped every event whose handler hit a
    constraint.) Not a SAVEPOINT: on SQLite through pysqlite, ``RELEASE`` of
    a savepoint opened before any write *commits* it, so a later handler
    failure would leave the inbox row behind and the retry would skip the
    event as a duplicate.

    **Pending is not lost.** A failed message stays in this member's
    pending-entries list; each poll re-claims its own pending entries once
    they have waited ``retry_base_ms * 2**(deliveries - 1)`` (capped at
    ``min_idle_ms``), and entries another member left idle for
    ``min_idle_ms`` (it died), with XCLAIM. Without that, a message that
    failed once would wait for a restart.

    **Poison goes to a dead-letter stream.** The stream's delivery count
    (XPENDING) is the attempt counter, so it survives restarts and is shared
    by the group. When attempt ``max_attempts`` fails, the message is added
    to ``dead_letter_stream`` (default ``<stream>:dead``) with the error,
    group, consumer name and attempts, and acknowledged on the main stream,
    in one MULTI. A message whose count already exceeds ``max_attempts``
    (it killed every consumer that took it, so no attempt ever ended) is
    dead-lettered without being tried again, unless the inbox shows it was
    applied. Each dead letter increments ``outbox_dead_letters_total``.
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
        max_attempts: int = 5,
        retry_base_ms: int = 1_000,
        dead_letter_stream: str | None = None,
        metrics: ConsumerMetrics | None = None,
        crash_point: Callable[[str], None] = _no_crash,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.client = client
        self.sessions = sessions
        self.group = group
        self.name = name
        self.handler = handler
        self.stream = stream
        self.min_idle_ms = min_idle_ms
        self.max_attempts = max_attempts
        self.retry_base_ms = retry_base_ms
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.metrics = metrics if metrics is not None else ConsumerMetrics()
        self.crash_point = crash_point
        try:
            self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def consume_once(self, count: int = 100, block_ms: int = 100) -> int:
        """Retry due pending entries, read new ones, apply each once; returns entries handled.

        Blocks up to ``block_ms`` for new entries only when there was nothing
        pending to retry.
        """
        entries = self._claim_pending(count)
        fresh: Any = self.client.xreadgroup(
            self.group,
            self.name,
            {self.stream: ">"},
            count=count,
            block=None if entries else block_ms,
        )
        for _stream, messages in fresh or []:
            entries.extend((entry_id, fields, 1) for entry_id, fields in messages)
        for entry_id, fields, deliveries in entries:
            self._handle(entry_id, fields, deliveries)
        return len(entries)

    def _retry_after_ms(self, deliveries: int) -> int:
        """How long a failed entry waits before its next attempt: doubling, capped."""
        return min(self.retry_base_ms << max(deliveries - 1, 0), self.min_idle_ms)

    def _claim_pending(self, count: int) -> list[tuple[Any, Any, int]]:
        """(entry id, fields, deliveries) of pending entries due again, claimed with XCLAIM.

        Our own failures once their backoff has passed; another member's
        entries once idle ``min_idle_ms`` (it died or hangs). XCLAIM's
        min-idle argument makes two members racing for one entry harmless:
        the loser gets nothing back. Its delivery count is the attempt count.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.xpending_range(self.stream, self.group, "-", "+", count, consumername=self.name)
        pipe.xpending_range(self.stream, self.group, "-", "+", count, idle=self.min_idle_ms)
        own, stale = pipe.execute()
        due: dict[str, tuple[Any, int, int]] = {}  # id -> (raw id, min idle, deliveries)
        for entry in own:
            wait = self._retry_after_ms(int(entry["times_delivered"]))
            if int(entry["time_since_delivered"]) >= wait:
                due[as_text(entry["message_id"])] = (
                    entry["message_id"], wait, int(entry["times_delivered"]),
                )  # fmt: skip
        for entry in stale:
            due.setdefault(
                as_text(entry["message_id"]),
                (entry["message_id"], self.min_idle_ms, int(entry["times_delivered"])),
            )
        if not due:
            return []
        pipe = self.client.pipeline(transaction=False)
        for raw_id, min_idle, _ in due.values():
            pipe.xclaim(self.stream, self.group, self.name, min_idle, [raw_id])
        claimed: list[tuple[Any, Any, int]] = []
        for (raw_id, _, deliveries), reply in zip(due.values(), pipe.execute(), strict=True):
            if reply:  # empty: another member claimed it first
                claimed.append((raw_id, reply[0][1], deliveries + 1))
        return claimed

    def _handle(self, entry_id: Any, raw: dict[Any, Any] | None, deliveries: int) -> None:
        if raw is None:  # trimmed from the stream while pending: nothing left to apply
            self.client.xack(self.stream, self.group, entry_id)
            return
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        if deliveries > self.max_attempts:  # earlier deliveries ended in no outcome at all
            if not self._already_applied(fields):
                self._dead_letter(
                    entry_id, fields, deliveries - 1,
                    f"no outcome after {deliveries - 1} deliveries: the consumer died handling it",
                )  # fmt: skip
                return
        elif not self._attempt(entry_id, fields, deliveries):
            return  # pending: claimed again after its backoff, or dead-lettered
        self.crash_point("after_commit")
        self.client.xack(self.stream, self.group, entry_id)

    def _attempt(self, entry_id: Any, fields: dict[str, str], deliveries: int) -> bool:
        """Apply once; on any failure count it, and dead-letter it on the last attempt."""
        try:
            self._apply(fields)
        except Exception as exc:  # whatever the handler raised: never acknowledged as done
            self.metrics.failures.labels(self.group).inc()
            error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
            log.warning(
                "outbox consumer %s/%s: entry %s failed (attempt %d of %d): %s",
                self.group, self.name, as_text(entry_id), deliveries, self.max_attempts, error,
            )  # fmt: skip
            if deliveries >= self.max_attempts:
                self._dead_letter(entry_id, fields, deliveries, error)
            return False
        return True

    def _apply(self, fields: dict[str, str]) -> None:
        """The handler's effect and the inbox row, in one transaction; a duplicate does nothing."""
        from payment_systems.database.models import ConsumerInbox

        message = {**fields, "payload": json.loads(fields["payload"])}
        with self.sessions() as session, session.begin():
            table = ConsumerInbox.__table__
            dialect = session.get_bind().dialect.name
            insert = _INSERTS.get(dialect)
            if insert is None:
                raise NotImplementedError(f"IdempotentConsumer does not support {dialect}")
            inserted = session.execute(
                insert(table)
                .values(consumer=self.group, event_id=fields["event_id"])
                .on_conflict_do_nothing()
                .returning(table.c.event_id)  # not rowcount: psycopg reports -1 for it
            ).first()
            if inserted is None:
                return  # already applied: acknowledging is all that is left to do
            self.handler(session, message)

    def _already_applied(self, fields: dict[str, str]) -> bool:
        from payment_systems.database.models import ConsumerInbox

        event_id = fields.get("event_id")
        if event_id is None:
            return False
        with self.sessions() as session:
            return session.get(ConsumerInbox, (self.group, event_id)) is not None

    def _dead_letter(
        self, entry_id: Any, fields: dict[str, str], attempts: int, error: str
    ) -> None:
        """Park the message with why it failed, and release it from the main stream, atomically.

        One MULTI: a crash never acknowledges without the dead letter (lost)
        nor leaves both (dead-lettered and still retried). In Redis Cluster
        both keys must hash to one slot: name the stream with a hash tag,
        e.g. ``{payments}:events``.
        """
        record = {
            **fields,
            "error": error,
            "group": self.group,
            "consumer": self.name,
            "attempts": str(attempts),
            "stream": self.stream,
            "entry_id": as_text(entry_id),
            "dead_at": _now().isoformat(),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, record)  # type: ignore[arg-type]
        pipe.xack(self.stream, self.group, entry_id)
        pipe.execute()
        self.metrics.dead_letters.labels(self.group).inc()
        log.error(
            "outbox consumer %s/%s: entry %s dead-lettered to %s after %d attempts: %s",
            self.group, self.name, as_text(entry_id), self.dead_letter_stream, attempts, error,
        )  # fmt: skip

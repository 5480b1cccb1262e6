"""The SQL idempotency backend, for comparison: Brandur Leach's design on Postgres or SQLite.

The ``idempotency_keys`` row is the lock. ``locked_at`` marks a holder,
``lock_token`` fences it, and ``recovery_point`` records how far the request
got (``started`` → ``payment_created`` → ``psp_called`` → ``finished``), so a
request that crashed is resumed from there by its retry, not started over.

* **Postgres**: ``pg_advisory_xact_lock`` on a hash of (merchant, key)
  serialises the check-and-claim of concurrent requests for *the same key*
  without blocking any other key, and the row is read ``FOR UPDATE``.
* **SQLite**: the unique ``(merchant_id, key)`` insert is the lock; the loser
  of the race sees an integrity error and answers "in progress".

A held lock older than ``lock_timeout_s`` (90 s in rocket-rides-atomic; 30 s
here, to match the Redis backend) is presumed dead and taken over. `reap`
deletes keys older than 24 hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from payment_systems.core.idempotency import (
    LOCK_TTL_S,
    RESPONSE_TTL_S,
    Begin,
    Outcome,
    StoredResponse,
)
from payment_systems.database.models import IdempotencyKey

T = sa.Table(IdempotencyKey.__tablename__, IdempotencyKey.metadata)  # the mapped table


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def advisory_key(scope: str, key: str) -> int:
    """A signed 64-bit lock id for ``pg_advisory_xact_lock``."""
    digest = hashlib.sha256(f"{scope}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlIdempotency:
    """Idempotency keys in the application database (``idempotency_keys`` table)."""

    def __init__(
        self,
        engine: Engine,
        *,
        lock_timeout_s: float = LOCK_TTL_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.lock_timeout = timedelta(seconds=lock_timeout_s)
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"

    def _row(self, conn: Connection, scope: str, key: str) -> sa.Row[tuple[object, ...]] | None:
        query = sa.select(T).where(T.c.merchant_id == scope, T.c.key == key)
        if self.postgres:
            query = query.with_for_update()
        return conn.execute(query).first()

    def begin(self, scope: str, key: str, fingerprint: str) -> Begin:
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                if self.postgres:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(scope, key))))
                row = self._row(conn, scope, key)
                if row is None:
                    conn.execute(
                        T.insert().values(
                            merchant_id=scope,
                            key=key,
                            fingerprint=fingerprint,
                            locked_at=now,
                            lock_token=1,
                            recovery_point="started",
                            created_at=now,
                            last_run_at=now,
                        )
                    )
                    return Begin(Outcome.NEW, token=1, recovery_point="started")
                if row.fingerprint != fingerprint:
                    return Begin(Outcome.MISMATCH)
                if row.response_code is not None:
                    stored = StoredResponse(int(row.response_code), bytes(row.response_body or b""))
                    return Begin(Outcome.REPLAY, response=stored)
                if row.locked_at is not None and row.locked_at > now - self.lock_timeout:
                    return Begin(Outcome.IN_PROGRESS)
                token = int(row.lock_token) + 1
                taken = conn.execute(
                    T.update()
                    .where(T.c.id == row.id, T.c.lock_token == row.lock_token)
                    .values(locked_at=now, lock_token=token, last_run_at=now)
                ).rowcount
                if taken != 1:  # another request took it over first (SQLite has no FOR UPDATE)
                    return Begin(Outcome.IN_PROGRESS)
                return Begin(Outcome.NEW, token=token, recovery_point=str(row.recovery_point))
        except IntegrityError:
            return Begin(Outcome.IN_PROGRESS)  # lost the insert race

    def checkpoint(self, scope: str, key: str, token: int, recovery_point: str) -> bool:
        """Record progress (Brandur's atomic phases); False if our lock was taken over."""
        with self.engine.begin() as conn:
            done = conn.execute(
                T.update()
                .where(T.c.merchant_id == scope, T.c.key == key, T.c.lock_token == token)
                .values(recovery_point=recovery_point)
            ).rowcount
        return bool(done == 1)

    def complete(self, scope: str, key: str, token: int, response: StoredResponse) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                T.update()
                .where(T.c.merchant_id == scope, T.c.key == key, T.c.lock_token == token)
                .values(
                    response_code=response.status,
                    response_body=response.body,
                    locked_at=None,
                    recovery_point="finished",
                )
            ).rowcount
        return bool(done == 1)

    def release(self, scope: str, key: str, token: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                T.delete().where(
                    T.c.merchant_id == scope,
                    T.c.key == key,
                    T.c.lock_token == token,
                    T.c.response_code.is_(None),
                )
            )

    def reap(self, max_age_s: int = RESPONSE_TTL_S) -> int:
        """Delete keys older than ``max_age_s`` (24 h); returns how many."""
        cutoff = self.clock() - timedelta(seconds=max_age_s)
        with self.engine.begin() as conn:
            return int(conn.execute(T.delete().where(T.c.created_at < cutoff)).rowcount)

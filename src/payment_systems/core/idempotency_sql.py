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
here, to match the Redis backend) is presumed dead and taken over.

**Fencing tokens only ever grow.** ``lock_token`` is the fencing token, so a
holder whose lock expired mid-request cannot store its (stale) response over
the result of the request that took the key over. That holds only if a token
is never issued twice for one key: `release` therefore keeps the row and its
token, and only frees the lock, so the next `begin` issues the next token. (It
used to delete the row; the next request then started again at token 1, and a
stale holder with token 1 could overwrite its result.) The row goes away only
when `reap` deletes it, 24 hours on and never while its lock is held: the
janitor (``payment-systems janitor``) calls `reap_idempotency_keys`.

The response's content type is stored with it, so a replayed 4xx is
``application/problem+json`` again, byte for byte as first sent.
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
# What the API sent for every response before the content type was stored (migration 0005).
_PROBLEM_JSON = "application/problem+json"
_JSON = "application/json"


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
                # Released (freed, nothing stored): the key is free for any body, as in
                # Redis, whose release deletes the record but keeps the fence counter.
                released = row.locked_at is None and row.response_code is None
                if row.fingerprint != fingerprint and not released:
                    return Begin(Outcome.MISMATCH)
                if row.response_code is not None:
                    return Begin(Outcome.REPLAY, response=_stored(row))
                if row.locked_at is not None and row.locked_at > now - self.lock_timeout:
                    return Begin(Outcome.IN_PROGRESS)
                token = int(row.lock_token) + 1  # never reissued: release keeps the row
                taken = conn.execute(
                    T.update()
                    .where(T.c.id == row.id, T.c.lock_token == row.lock_token)
                    .values(
                        fingerprint=fingerprint, locked_at=now, lock_token=token, last_run_at=now
                    )
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
        """Store the response and free the lock; False, storing nothing, if ``token`` is stale.

        Stale: our lock expired and another request took the key over (its
        token is higher), so its result, not ours, is the one to replay.
        """
        with self.engine.begin() as conn:
            done = conn.execute(
                T.update()
                .where(T.c.merchant_id == scope, T.c.key == key, T.c.lock_token == token)
                .values(
                    response_code=response.status,
                    response_body=response.body,
                    response_content_type=response.content_type,
                    locked_at=None,
                    recovery_point="finished",
                )
            ).rowcount
        return bool(done == 1)

    def release(self, scope: str, key: str, token: int) -> None:
        """Free the lock, storing nothing, so the client's retry is new; keep the token.

        The row stays, with its ``lock_token``, so the next holder gets a
        higher token than any earlier one: deleting it would restart the
        count at 1 and let a stale holder's `complete` match a newer holder's
        token. Its ``recovery_point`` stays too, so the retry resumes there.
        """
        with self.engine.begin() as conn:
            conn.execute(
                T.update()
                .where(
                    T.c.merchant_id == scope,
                    T.c.key == key,
                    T.c.lock_token == token,
                    T.c.response_code.is_(None),
                )
                .values(locked_at=None)
            )

    def reap(self, max_age_s: int = RESPONSE_TTL_S) -> int:
        """Delete keys older than ``max_age_s`` (24 h), except one held right now; returns how many.

        A key whose lock is live is kept even if old: deleting it would let the
        next `begin` start the tokens again at 1 under a running holder.
        """
        now = self.clock()
        cutoff = now - timedelta(seconds=max_age_s)
        with self.engine.begin() as conn:
            reaped = conn.execute(
                T.delete().where(
                    T.c.created_at < cutoff,
                    sa.or_(T.c.locked_at.is_(None), T.c.locked_at <= now - self.lock_timeout),
                )
            ).rowcount
        return int(reaped)


def _stored(row: sa.Row[tuple[object, ...]]) -> StoredResponse:
    """The stored response; a row from before migration 0005 gets what the API sent then."""
    status = int(row.response_code)
    content_type = row.response_content_type or (_PROBLEM_JSON if status >= 400 else _JSON)
    return StoredResponse(status, bytes(row.response_body or b""), str(content_type))

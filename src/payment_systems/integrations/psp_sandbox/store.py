"""The sandbox's state: Stripe objects as JSON documents in SQLite.

Stripe's API is a set of JSON objects linked by ids, so a document table with
a few indexed link columns (``parent``, ``payout``) is all the sandbox needs.
Every account (one per API key) sees only its own objects, its own
idempotency keys and its own clock, so tests never interfere.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from payment_systems.infra.engines import create_engine

Obj = dict[str, Any]

metadata = sa.MetaData()

objects = sa.Table(
    "objects",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("parent", sa.String(64)),
    sa.Column("payout", sa.String(64)),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index("ix_objects_account_type_seq", "account", "type", "seq"),
    sa.Index("ix_objects_parent", "parent"),
    sa.Index("ix_objects_payout", "payout"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # in_flight | done
    sa.Column("status", sa.Integer),
    sa.Column("body", sa.Text),
    sa.Column("created", sa.Float, nullable=False),
)

clocks = sa.Table(
    "clocks",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("offset_s", sa.BigInteger, nullable=False),
)

deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("endpoint_id", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("rank", sa.BigInteger, nullable=False),  # delivery order among equally due rows
    sa.Column("state", sa.String(16), nullable=False),  # see delivery.py: pending, held...
    sa.Column("last_status", sa.Integer),
    sa.Index("ix_deliveries_state_due", "state", "due_at"),
)

IDEMPOTENCY_TTL_S = 24 * 3600

BeginResult = Literal["new", "replay", "mismatch", "in_flight"]


@dataclass(frozen=True)
class Begun:
    """What ``begin_idempotent`` found: a new key, a stored response, or a conflict."""

    outcome: BeginResult
    status: int | None = None
    body: str | None = None


def _sqlite_speed(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def fingerprint(method: str, path: str, params: Obj) -> str:
    """SHA-256 of the request's method, path and canonical parameters."""
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Store:
    """Typed access to the sandbox tables; every method is one short transaction."""

    def __init__(self, url: str, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            # WAL lets the webhook dispatcher read while a request writes, and
            # synchronous=NORMAL skips an fsync per commit: a sandbox may lose
            # its last transactions on power loss, never on a process crash.
            sa.event.listen(self.engine, "connect", _sqlite_speed)
        metadata.create_all(self.engine)
        self.wall_clock = wall_clock
        with self.engine.connect() as conn:
            top = conn.execute(sa.select(sa.func.max(objects.c.seq))).scalar()
        self._seq = itertools.count((top or 0) + 1)

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One atomic unit: all writes of a request commit together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    # -- objects ---------------------------------------------------------------

    def insert(self, conn: Connection, account: str, obj: Obj, parent: str | None = None) -> Obj:
        """Store a new object; ``parent`` links refunds/disputes to charges and so on."""
        conn.execute(
            objects.insert().values(
                id=obj["id"],
                seq=next(self._seq),
                account=account,
                type=obj["object"],
                created=obj["created"],
                parent=parent,
                payout=obj.get("payout") if obj["object"] == "balance_transaction" else None,
                data=json.dumps(obj),
            )
        )
        return obj

    def save(self, conn: Connection, obj: Obj) -> Obj:
        """Overwrite an existing object with its new state."""
        values: dict[str, Any] = {"data": json.dumps(obj)}
        if obj["object"] == "balance_transaction":
            values["payout"] = obj.get("payout")
        conn.execute(objects.update().where(objects.c.id == obj["id"]).values(**values))
        return obj

    def get(self, conn: Connection, account: str, kind: str, object_id: str) -> Obj | None:
        """One object of this account, or None."""
        row = conn.execute(
            sa.select(objects.c.data).where(
                objects.c.id == object_id, objects.c.account == account, objects.c.type == kind
            )
        ).scalar()
        return None if row is None else dict(json.loads(row))

    def find(
        self,
        conn: Connection,
        account: str,
        kind: str,
        *,
        parent: str | None = None,
        payout: str | None = None,
        limit: int | None = None,
        before_seq: int | None = None,
        oldest_first: bool = False,
    ) -> list[tuple[int, Obj]]:
        """Objects of one kind, newest first (as Stripe lists them), with their sequence."""
        query = sa.select(objects.c.seq, objects.c.data).where(
            objects.c.account == account, objects.c.type == kind
        )
        if parent is not None:
            query = query.where(objects.c.parent == parent)
        if payout is not None:
            query = query.where(objects.c.payout == payout)
        if before_seq is not None:
            query = query.where(objects.c.seq < before_seq)
        order = objects.c.seq.asc() if oldest_first else objects.c.seq.desc()
        query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        return [(seq, dict(json.loads(data))) for seq, data in conn.execute(query)]

    def seq_of(self, conn: Connection, account: str, object_id: str) -> int | None:
        """The list position of an object (for ``starting_after`` pagination)."""
        seq = conn.execute(
            sa.select(objects.c.seq).where(objects.c.id == object_id, objects.c.account == account)
        ).scalar()
        return None if seq is None else int(seq)

    # -- idempotency -----------------------------------------------------------

    def begin_idempotent(self, account: str, key: str, fp: str) -> Begun:
        """Claim ``key`` for this request, or report what already holds it.

        The claim is an INSERT on the primary key, so two concurrent requests
        cannot both win it: the loser sees ``in_flight`` and answers 409.
        """
        now = self.wall_clock()
        with self.tx() as conn:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.created < now - IDEMPOTENCY_TTL_S
                )
            )
            row = conn.execute(
                sa.select(idempotency_keys).where(
                    idempotency_keys.c.account == account, idempotency_keys.c.key == key
                )
            ).first()
            if row is None:
                conn.execute(
                    idempotency_keys.insert().values(
                        account=account, key=key, fingerprint=fp, state="in_flight", created=now
                    )
                )
                return Begun("new")
        if row.fingerprint != fp:
            return Begun("mismatch")
        if row.state == "in_flight":
            return Begun("in_flight")
        return Begun("replay", status=row.status, body=row.body)

    def complete_idempotent(self, account: str, key: str, status: int, body: str) -> None:
        """Store the response, 5xx included: a replay must return exactly it."""
        with self.tx() as conn:
            conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.account == account, idempotency_keys.c.key == key)
                .values(state="done", status=status, body=body)
            )

    def release_idempotent(self, account: str, key: str) -> None:
        """Forget a key whose request never started executing (a 4xx validation error)."""
        with self.tx() as conn:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.account == account, idempotency_keys.c.key == key
                )
            )

    # -- the sandbox clock -----------------------------------------------------

    def now(self, account: str) -> int:
        """The account's time: wall clock plus however far the sandbox clock was advanced."""
        with self.engine.connect() as conn:
            offset = conn.execute(
                sa.select(clocks.c.offset_s).where(clocks.c.account == account)
            ).scalar()
        return int(self.wall_clock()) + int(offset or 0)

    def advance(self, conn: Connection, account: str, seconds: int) -> None:
        """Move the account's clock forward, inside the caller's transaction."""
        current = conn.execute(
            sa.select(clocks.c.offset_s).where(clocks.c.account == account)
        ).scalar()
        if current is None:
            conn.execute(clocks.insert().values(account=account, offset_s=seconds))
        else:
            conn.execute(
                clocks.update()
                .where(clocks.c.account == account)
                .values(offset_s=current + seconds)
            )

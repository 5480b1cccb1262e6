"""Webhook delivery: signed POSTs to registered endpoints, retried with backoff.

A delivery is a row in ``webhook_deliveries``; a background task sends the
due ones in order. A 2xx response marks it delivered; anything else (an
error status, a timeout, a refused connection) schedules a retry after
``base_s * 2**(attempt-1)`` seconds, capped at ``cap_s``, up to
``max_attempts``. Stripe retries for three days with the same shape; the
sandbox's defaults are short so that tests see retries in seconds.

A delivery's ``state`` is one of:

| state | meaning |
|---|---|
| ``pending`` | the background task sends it once ``due_at`` has passed |
| ``held`` | the account holds its webhooks: only a release sends it |
| ``sending`` | claimed by one sender (the task, a release or a redelivery) |
| ``delivered`` / ``failed`` | answered 2xx / gave up after ``max_attempts`` |

``sending`` exists so that a row is sent by exactly one of them: the task
claims its batch before its first network call, and a release claims the
held rows it sends, so a hold, release and resume racing with a batch in
flight never sends a delivery twice by accident. The only duplicates are
the ones asked for.

Holding is for model checkers, which must decide when each webhook arrives:
while an account holds, nothing reaches its endpoints unless a release or a
redelivery sends it, and a failed attempt goes back to ``held`` (its attempt
counted) instead of being retried on a timer that would race with the
checker's assertions. Without a hold, failed attempts are retried with
backoff as above, whichever way they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx
import sqlalchemy as sa

from payment_systems.integrations.psp_sandbox.errors import InvalidRequest, NotFound
from payment_systems.integrations.psp_sandbox.store import Store, deliveries, objects
from payment_systems.integrations.webhook_signatures import sign_stripe

log = logging.getLogger(__name__)

ReleaseOrder = Literal["fifo", "lifo", "random"]
RELEASE_ORDERS: tuple[ReleaseOrder, ...] = ("fifo", "lifo", "random")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the sandbox tries to deliver one event to one endpoint."""

    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int = 8
    timeout_s: float = 10.0

    def delay_after(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        return float(min(self.base_s * 2 ** (attempts - 1), self.cap_s))


@dataclass(frozen=True)
class Sent:
    """One attempt made by a release or a redelivery, as the control call reports it.

    ``state`` is the delivery's state afterwards: ``delivered``, ``held`` (it
    failed while the account holds), ``pending`` (it failed and will be
    retried with backoff) or ``failed`` (it was the last attempt).
    """

    delivery: int
    event: str
    type: str
    endpoint: str
    status: int | None
    attempts: int
    state: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Attempt:
    status: int | None
    attempts: int
    state: str


class Dispatcher:
    """Sends due deliveries; one instance per sandbox app, run as a background task.

    ``holding(account)`` says whether the account holds its webhooks (the
    sandbox passes `FaultBook.holding`); it is asked right before each send,
    so a hold set while a batch is on its way still stops the rest of it.
    """

    def __init__(
        self,
        store: Store,
        policy: RetryPolicy | None = None,
        poll_s: float = 0.02,
        *,
        holding: Callable[[str], bool] = lambda _account: False,
    ):
        self.store = store
        self.policy = policy or RetryPolicy()
        self.poll_s = poll_s
        self.holding = holding
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Deliver until ``stop()``; a failing endpoint never stops the loop."""
        with self.store.tx() as conn:  # claims a previous run died holding: send them again
            conn.execute(
                deliveries.update().where(deliveries.c.state == "sending").values(state="pending")
            )
        async with httpx.AsyncClient(timeout=self.policy.timeout_s) as client:
            while not self._stopping.is_set():
                sent = await self.deliver_due(client)
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_s)

    def stop(self) -> None:
        self._stopping.set()

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Send every delivery due now, in (due time, rank) order; returns how many."""
        now = self.store.wall_clock()
        with self.store.tx() as conn:
            rows = conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.state == "pending", deliveries.c.due_at <= now)
                .order_by(deliveries.c.due_at, deliveries.c.rank)
                .limit(100)
            ).all()
            if rows:  # one write claims the batch: a hold or release cannot also send these
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_([row.id for row in rows]))
                    .values(state="sending")
                )
        for row in rows:
            if self.holding(row.account):  # held since the batch was claimed
                self._finish(row.id, state="held")
            else:
                await self._deliver_one(client, row)
        return len(rows)

    async def _deliver_one(
        self, client: httpx.AsyncClient, row: sa.Row[tuple[object, ...]]
    ) -> _Attempt:
        """One signed POST of a claimed (``sending``) row, then its next state."""
        with self.store.engine.connect() as conn:
            event_data = conn.execute(
                sa.select(objects.c.data).where(objects.c.id == row.event_id)
            ).scalar_one()
            endpoint_data = conn.execute(
                sa.select(objects.c.data).where(objects.c.id == row.endpoint_id)
            ).scalar_one()
        endpoint = json.loads(endpoint_data)
        payload = event_data.encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign_stripe(endpoint["secret"], payload, int(time.time())),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) payment-systems-sandbox",
        }
        status: int | None = None
        try:
            response = await client.post(endpoint["url"], content=payload, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            log.info("webhook %s to %s failed: %s", row.event_id, endpoint["url"], exc)
        attempts = row.attempts + 1
        if status is not None and 200 <= status < 300:
            state = "delivered"
            self._finish(row.id, state=state, attempts=attempts, last_status=status)
        elif attempts >= self.policy.max_attempts:
            state = "failed"
            self._finish(row.id, state=state, attempts=attempts, last_status=status)
        elif self.holding(row.account):
            state = "held"  # the checker decides when it is tried again
            self._finish(row.id, state=state, attempts=attempts, last_status=status)
        else:
            state = "pending"
            due = self.store.wall_clock() + self.policy.delay_after(attempts)
            self._finish(row.id, state=state, attempts=attempts, last_status=status, due_at=due)
        return _Attempt(status, attempts, state)

    def _finish(self, delivery_id: int, **values: object) -> None:
        with self.store.tx() as conn:
            conn.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(**values))

    # -- holding, for model checkers ---------------------------------------------

    def hold_pending(self, account: str) -> int:
        """Move the account's not-yet-sent deliveries (new, delayed or retrying) to ``held``.

        A hold means "nothing arrives until I say so", so a delivery queued
        just before the hold, or waiting for its retry, is held as well.
        One already on the wire (``sending``) completes. Returns how many moved.
        """
        with self.store.tx() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(deliveries.c.account == account, deliveries.c.state == "pending")
                .values(state="held")
            ).rowcount
        return int(moved)

    def held(self, account: str) -> list[dict[str, Any]]:
        """The account's held events, oldest first: one entry per event, not per endpoint.

        An event is the unit a release names and orders; its deliveries (one
        per endpoint, two under the duplicate fault) travel together.
        """
        groups = self._held_groups(account)
        entries = []
        for event_id, rows in groups.items():
            event = self._event(rows[0].event_id)
            obj = event.get("data", {}).get("object", {})
            entries.append(
                {
                    "event": event_id,
                    "type": event["type"],
                    "object_id": obj.get("id"),
                    "created": event["created"],
                    "endpoints": sorted({row.endpoint_id for row in rows}),
                    "deliveries": len(rows),
                    "attempts": max(row.attempts for row in rows),
                }
            )
        return entries

    async def release(
        self,
        account: str,
        events: Sequence[str] = (),
        *,
        order: ReleaseOrder | None = None,
        seed: int | None = None,
        duplicate: bool = False,
    ) -> list[Sent]:
        """Send held deliveries now, one at a time, and report each answer.

        ``events`` picks events and the order they go in (no ``order`` or
        ``seed`` with it: the list *is* the order); without it every
        held event goes, oldest first (``fifo``), newest first (``lifo``) or
        shuffled by ``random.Random(seed)`` (``random``). The shuffle depends
        only on the seed and the number of held events, so a model checker's
        run replays exactly. ``duplicate`` sends each event a second time
        right after the first, as a fresh delivery with its own attempts.

        Everything is checked before anything is sent: an unknown id sends
        nothing. The call returns after the last endpoint answered, so the
        caller can assert on the receiver's state straight away.
        """
        groups = self._held_groups(account)
        if events:
            if order is not None or seed is not None:
                raise InvalidRequest("pass either event ids or an order, not both", "order")
            missing = [e for e in events if e not in groups]
            if missing:
                raise InvalidRequest(
                    f"no held delivery for {', '.join(missing)} "
                    "(GET /_sandbox/webhooks/held lists them)",
                    param="event",
                )
            if len(set(events)) != len(events):
                raise InvalidRequest(
                    "an event is listed twice; use duplicate=true to send it twice", "event"
                )
            chosen = list(events)
        else:
            order = order or "fifo"
            if order not in RELEASE_ORDERS:
                raise InvalidRequest("order must be fifo, lifo or random", param="order")
            if (order == "random") != (seed is not None):
                raise InvalidRequest("seed is required with order=random, and only then", "seed")
            chosen = list(groups)
            if order == "lifo":
                chosen.reverse()
            elif order == "random":
                random.Random(seed).shuffle(chosen)
        ids = [row.id for event_id in chosen for row in groups[event_id]]
        with self.store.tx() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids), deliveries.c.state == "held")
                .values(state="sending")
            )
        sent: list[Sent] = []
        async with httpx.AsyncClient(timeout=self.policy.timeout_s) as client:
            for event_id in chosen:
                event_type = self._event(event_id)["type"]
                rows = groups[event_id]
                for row in rows:
                    sent.append(await self._send(client, row, event_type))
                if duplicate:
                    for row in rows:
                        copy = self._new_delivery(account, event_id, row.endpoint_id)
                        sent.append(await self._send(client, copy, event_type))
        return sent

    async def redeliver(self, account: str, event_id: str) -> list[Sent]:
        """Send an event again, now, to every still-enabled endpoint it was queued for.

        This is the late duplicate: a fresh delivery with a fresh signature
        timestamp, whatever became of the original (delivered, still held or
        retrying), so a replay can even overtake a held original.
        """
        with self.store.engine.connect() as conn:
            if self.store.get(conn, account, "event", event_id) is None:
                raise NotFound("event", event_id, param="event")
            endpoint_ids = conn.execute(
                sa.select(deliveries.c.endpoint_id)
                .where(deliveries.c.account == account, deliveries.c.event_id == event_id)
                .group_by(deliveries.c.endpoint_id)
                .order_by(sa.func.min(deliveries.c.id))
            ).scalars()
            enabled = [
                endpoint_id
                for endpoint_id in endpoint_ids
                if (ep := self.store.get(conn, account, "webhook_endpoint", endpoint_id))
                and ep["status"] == "enabled"
            ]
        if not enabled:
            raise InvalidRequest(
                f"{event_id} was never queued for an endpoint that is still enabled", "event"
            )
        event_type = self._event(event_id)["type"]
        async with httpx.AsyncClient(timeout=self.policy.timeout_s) as client:
            return [
                await self._send(
                    client, self._new_delivery(account, event_id, endpoint_id), event_type
                )
                for endpoint_id in enabled
            ]

    async def _send(
        self, client: httpx.AsyncClient, row: sa.Row[tuple[object, ...]], event_type: str
    ) -> Sent:
        attempt = await self._deliver_one(client, row)
        return Sent(
            delivery=int(row.id),
            event=str(row.event_id),
            type=event_type,
            endpoint=str(row.endpoint_id),
            status=attempt.status,
            attempts=attempt.attempts,
            state=attempt.state,
        )

    def _held_groups(self, account: str) -> dict[str, list[sa.Row[tuple[object, ...]]]]:
        """Held rows by event id, in the order the events were queued."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.account == account, deliveries.c.state == "held")
                .order_by(deliveries.c.id)
            ).all()
        groups: dict[str, list[sa.Row[tuple[object, ...]]]] = {}
        for row in rows:
            groups.setdefault(str(row.event_id), []).append(row)
        return groups

    def _new_delivery(
        self, account: str, event_id: str, endpoint_id: str
    ) -> sa.Row[tuple[object, ...]]:
        """A fresh, already-claimed delivery row for a copy sent on request."""
        with self.store.tx() as conn:
            inserted = conn.execute(
                deliveries.insert().values(
                    account=account,
                    event_id=event_id,
                    endpoint_id=endpoint_id,
                    attempts=0,
                    due_at=self.store.wall_clock(),
                    rank=time.time_ns(),
                    state="sending",
                )
            )
            key = inserted.inserted_primary_key
            assert key is not None
            return conn.execute(sa.select(deliveries).where(deliveries.c.id == key[0])).one()

    def _event(self, event_id: str) -> dict[str, Any]:
        with self.store.engine.connect() as conn:
            data = conn.execute(
                sa.select(objects.c.data).where(objects.c.id == event_id)
            ).scalar_one()
        event: dict[str, Any] = json.loads(data)
        return event

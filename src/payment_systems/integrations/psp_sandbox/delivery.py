"""Webhook delivery: signed POSTs to registered endpoints, retried with backoff.

A delivery is a row in ``webhook_deliveries``; a background task sends the
due ones in order. A 2xx response marks it delivered; anything else (an
error status, a timeout, a refused connection) schedules a retry after
``base_s * 2**(attempt-1)`` seconds, capped at ``cap_s``, up to
``max_attempts``. Stripe retries for three days with the same shape; the
sandbox's defaults are short so that tests see retries in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from payment_systems.integrations.psp_sandbox.store import Store, deliveries, objects
from payment_systems.integrations.webhook_signatures import sign_stripe

log = logging.getLogger(__name__)


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


class Dispatcher:
    """Sends due deliveries; one instance per sandbox app, run as a background task."""

    def __init__(self, store: Store, policy: RetryPolicy | None = None, poll_s: float = 0.02):
        self.store = store
        self.policy = policy or RetryPolicy()
        self.poll_s = poll_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Deliver until ``stop()``; a failing endpoint never stops the loop."""
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
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.state == "pending", deliveries.c.due_at <= now)
                .order_by(deliveries.c.due_at, deliveries.c.rank)
                .limit(100)
            ).all()
        for row in rows:
            await self._deliver_one(client, row)
        return len(rows)

    async def _deliver_one(
        self, client: httpx.AsyncClient, row: sa.Row[tuple[object, ...]]
    ) -> None:
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
            values: dict[str, object] = {"state": "delivered"}
        elif attempts >= self.policy.max_attempts:
            values = {"state": "failed"}
        else:
            values = {"due_at": self.store.wall_clock() + self.policy.delay_after(attempts)}
        with self.store.tx() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == row.id)
                .values(attempts=attempts, last_status=status, **values)
            )

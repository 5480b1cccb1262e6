"""What every sandbox operation needs: the store, a transaction, the account and its time."""

from __future__ import annotations

import json
import math
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from payment_systems.integrations.psp_sandbox.store import Obj, Store, deliveries

ALPHABET = string.ascii_letters + string.digits
API_VERSION = "2026-10-28.sandbox"


def random_id(prefix: str, choice: Callable[[str], str] = secrets.choice) -> str:
    """A Stripe-style id: ``pi_`` + 24 random characters."""
    return f"{prefix}_" + "".join(choice(ALPHABET) for _ in range(24))


@dataclass
class Ctx:
    """One request's unit of work against one account.

    ``delay_webhooks_s`` and ``duplicate_webhooks`` carry the webhook faults
    active for this account, applied as events are queued; ``hold_webhooks``
    queues the deliveries as ``held``, so only a release sends them.
    """

    store: Store
    conn: Connection
    account: str
    now: int
    new_id: Callable[[str], str] = random_id
    request_id: str | None = None
    idempotency_key: str | None = None
    delay_webhooks_s: float = 0.0
    duplicate_webhooks: bool = False
    reorder_window_s: float | None = None
    hold_webhooks: bool = False
    events: list[Obj] = field(default_factory=list)
    _window_due: float | None = None  # one reorder window per request, however long it takes

    def insert(self, obj: Obj, parent: str | None = None) -> Obj:
        return self.store.insert(self.conn, self.account, obj, parent)

    def save(self, obj: Obj) -> Obj:
        return self.store.save(self.conn, obj)

    def get(self, kind: str, object_id: str) -> Obj | None:
        return self.store.get(self.conn, self.account, kind, object_id)

    def emit(self, event_type: str, obj: Obj) -> Obj:
        """Record an event and queue its delivery to every subscribed endpoint."""
        event: dict[str, Any] = {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now,
            "data": {"object": json.loads(json.dumps(obj))},
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": event_type,
        }
        endpoints = [
            ep
            for _, ep in self.store.find(self.conn, self.account, "webhook_endpoint")
            if ep["status"] == "enabled"
            and ("*" in ep["enabled_events"] or event_type in ep["enabled_events"])
        ]
        event["pending_webhooks"] = len(endpoints)
        self.insert(event)
        wall = self.store.wall_clock()
        due = wall + self.delay_webhooks_s
        rank = time.time_ns()
        if self.reorder_window_s:
            # hold every event of this request until its window ends, then send newest first
            if self._window_due is None:
                window = self.reorder_window_s
                self._window_due = (math.floor(wall / window) + 1) * window + self.delay_webhooks_s
            due = self._window_due
            rank = -rank
        copies = 2 if self.duplicate_webhooks else 1
        for endpoint in endpoints:
            for _ in range(copies):
                self.conn.execute(
                    deliveries.insert().values(
                        account=self.account,
                        event_id=event["id"],
                        endpoint_id=endpoint["id"],
                        attempts=0,
                        due_at=due,
                        rank=rank,
                        state="held" if self.hold_webhooks else "pending",
                    )
                )
        self.events.append(event)
        return event

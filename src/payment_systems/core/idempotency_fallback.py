"""Redis first, the SQL table when Redis is down: the "fall back" policy for a dead Redis.

With Redis gone, the API has two honest choices:

* **fail closed** (the default, `RedisIdempotency` alone): payment creation
  answers 503 ``idempotency_unavailable`` and nothing happens. Availability
  drops to zero for writes; correctness is untouched.
* **fall back** (``IDEMPOTENCY_FALLBACK=sql``, this class): take the lock in
  the database's ``idempotency_keys`` table instead (`SqlIdempotency`), so
  payments go on, a little slower, while Redis is away.

Falling back is safe because neither store is the last line of defence. A
key claimed in Redis just before it died, then claimed again in SQL by a
retry, leads both requests to the same ``payments`` row (unique on
merchant and key), and to the same PSP idempotency key, which is derived
from that row's id. The worst a split brain can do is run the handler
twice; it cannot charge twice. What falling back costs is a database round
trip or two per request, on the database that is already the bottleneck,
which is why it is a switch and not the default.

Each token remembers which store issued it, so ``complete`` and
``release`` go back to the store that holds the lock.

Redis expires its keys by itself; the SQL table does not, so the janitor calls
`reap_idempotency_keys` to delete the rows older than 24 hours.
"""

from __future__ import annotations

import threading

from payment_systems.core.idempotency import (
    Begin,
    IdempotencyBackend,
    IdempotencyUnavailable,
    Outcome,
    StoredResponse,
)
from payment_systems.core.idempotency_sql import SqlIdempotency


class FallbackIdempotency:
    """`IdempotencyBackend` over a primary store, with a secondary while it is unreachable."""

    def __init__(self, primary: IdempotencyBackend, secondary: IdempotencyBackend) -> None:
        self.primary = primary
        self.secondary = secondary
        self.fallbacks = 0  # how many requests the secondary has served (for the chaos report)
        self._issued_by: dict[tuple[str, str, int], IdempotencyBackend] = {}
        self._lock = threading.Lock()

    def begin(self, scope: str, key: str, fingerprint: str) -> Begin:
        try:
            return self.primary.begin(scope, key, fingerprint)
        except IdempotencyUnavailable:
            begun = self.secondary.begin(scope, key, fingerprint)
            with self._lock:
                self.fallbacks += 1
                if begun.outcome is Outcome.NEW:
                    self._issued_by[(scope, key, begun.token)] = self.secondary
            return begun

    def _store_for(self, scope: str, key: str, token: int) -> IdempotencyBackend:
        with self._lock:
            return self._issued_by.pop((scope, key, token), self.primary)

    def complete(self, scope: str, key: str, token: int, response: StoredResponse) -> bool:
        return self._store_for(scope, key, token).complete(scope, key, token, response)

    def release(self, scope: str, key: str, token: int) -> None:
        self._store_for(scope, key, token).release(scope, key, token)


def reap_idempotency_keys(backend: IdempotencyBackend) -> int | None:
    """Delete the SQL store's keys older than 24 h; how many, or None if there is no SQL store.

    ``backend`` is what the runtime uses: `SqlIdempotency` itself, a
    `FallbackIdempotency` with one behind Redis, or `RedisIdempotency`
    alone, whose keys expire by their TTL and need no reaping (None).
    """
    if isinstance(backend, SqlIdempotency):
        return backend.reap()
    if isinstance(backend, FallbackIdempotency):
        counts = [reap_idempotency_keys(store) for store in (backend.primary, backend.secondary)]
        found = [count for count in counts if count is not None]
        return sum(found) if found else None
    return None

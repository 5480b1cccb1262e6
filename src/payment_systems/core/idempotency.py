"""Idempotency keys with a distributed lock: the same request, processed once.

A client that times out retries; a load balancer retries; a user double-clicks.
Each retry carries the same ``Idempotency-Key``. This module decides, for
every request, whether it is **new** (process it), a **replay** (return the
stored response byte for byte), **in progress** elsewhere (409: try later),
or a **mismatch** (the key was used with a different body: 422).

The exact sequence when two identical requests arrive at once: both call
`RedisIdempotency.begin`, which is one Lua script, so Redis runs them one
after the other. The first finds no record, takes the lock with
``SET lock token NX PX 30000``, writes the fingerprint and state, and
returns ``new``. The second finds the record *in progress* with the lock
held, and returns ``in_progress``: a 409, and nothing stored, so its retry
later gets the replay.

**Why Redis rather than Postgres for this?** The check happens on every
payment request, before any other work, so it must be cheap and must not
hold a database connection while the PSP is called (seconds). A Redis
round-trip is well under a millisecond and holds nothing; Postgres can do it
too (`payment_systems.core.idempotency_sql` is that backend, kept for
comparison, and ``payment-systems experiment idempotency`` measures both).

**Why a 30 s lock, not the transaction timeout?** The lock must outlive the
slowest *legitimate* request, and the PSP call dominates it. Left to its
retries, `PSPClient` could take 4 attempts x (2 s connect + 10 s read)
+ 3.5 s of backoff = 51.5 s, or 138 s if the PSP answers each attempt with
``Retry-After: 30``: longer than the lock, so a client's retry got in while
the first request was still charging. So the PSP client has an overall
deadline per operation (``RetryPolicy.deadline_s``, 25 s): each attempt's read
timeout is cut to the time left, and no attempt or pause starts that would end
later. 25 s of PSP plus our own writes fit in 30 s, with 5 s to spare.
(`payment_systems.integrations.stripe_client.worst_case_psp_seconds` does
these sums, and a test keeps them true.) A lock much longer than that makes a
client whose first attempt crashed wait that long for its 409s to become a
resume (a shorter one expires mid-request: the "timeout-5s" experiment shows
it). The database transaction timeout is the wrong yardstick: we do not hold
a transaction across the PSP call at all.

**What protects us if the lock expires mid-request anyway?** Two things.
The payment row is unique per (merchant, key), so the second request
resumes the *same* payment, and the PSP idempotency key is derived from
that payment, so the PSP replays the first charge instead of making a second.
And the **fencing token**: every lock acquisition increments a counter, and
`complete` only stores a response if the token is still the current one,
so the stale first request cannot overwrite the newer holder's result.
`complete` returns False then, and the API logs it and counts it
(``idempotency_stale_completions_total``): each one means a request outlived
its lock, which the deadline above should make impossible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis

from payment_systems.errors import PaymentSystemsError
from payment_systems.infra.redis import as_text

LOCK_TTL_S = 30
"""Seconds a request holds its key: longer than the slowest legitimate request.

Why 30: the PSP call dominates a request, and `PSPClient` ends every PSP
operation within ``RetryPolicy.deadline_s`` = 25 s. Without that deadline its
worst case is 4 attempts x (2 s connect + 10 s read) + (0.5 + 1 + 2) s of
backoff = 51.5 s (138 s with ``Retry-After: 30`` pauses), which would outlive
the lock. The remaining 5 s cover our own database writes before and after
the call. ``worst_case_psp_seconds`` computes these figures from the code.
"""
RESPONSE_TTL_S = 24 * 3600
MAX_KEY_LENGTH = 255


class Outcome(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    REPLAY = "replay"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response exactly as first sent: status, body bytes and content type."""

    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Begin:
    """What `IdempotencyBackend.begin` decided; ``token`` fences a NEW holder."""

    outcome: Outcome
    token: int = 0
    response: StoredResponse | None = None
    recovery_point: str | None = None


class IdempotencyError(PaymentSystemsError):
    code = "idempotency_error"
    http_status = 400


class InvalidIdempotencyKey(IdempotencyError):
    """Missing, empty or longer than 255 characters."""

    code = "invalid_idempotency_key"


class IdempotencyUnavailable(IdempotencyError):
    """The backend (Redis) is down: fail closed, never process without the lock."""

    code = "idempotency_unavailable"
    http_status = 503


class IdempotencyBackend(Protocol):
    """The three operations every backend implements atomically."""

    def begin(self, scope: str, key: str, fingerprint: str) -> Begin: ...

    def complete(self, scope: str, key: str, token: int, response: StoredResponse) -> bool:
        """Store the response and free the lock; False if ``token`` is stale.

        Stale means our lock expired and another request took the key over: the
        response is *not* stored, and the caller must not pretend it was.
        """
        ...

    def release(self, scope: str, key: str, token: int) -> None: ...


def validate_key(key: str | None) -> str:
    """A key must be 1 to 255 characters (the IETF draft and Stripe agree)."""
    if key is None or not key.strip():
        raise InvalidIdempotencyKey(
            "the Idempotency-Key header is required on this request; send a unique value "
            "(a UUID) and reuse it when you retry"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key is {len(key)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the request: same method, path and JSON body (in any key order) match.

    Examples:
        >>> a = fingerprint("POST", "/v1/payments", b'{"amount": 100, "currency": "usd"}')
        >>> a == fingerprint("POST", "/v1/payments", b'{"currency":"usd","amount":100}')
        True
    """
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then return {'mismatch'} end
  if state == 'done' then
    local r = redis.call('HMGET', KEYS[1], 'status', 'body', 'ctype')
    return {'replay', r[1], r[2], r[3]}
  end
end
local token = redis.call('INCR', KEYS[3])
local ok
if ARGV[4] == '1' then
  ok = redis.call('SET', KEYS[2], token, 'NX', 'PX', ARGV[2])
else
  ok = redis.call('SET', KEYS[2], token, 'PX', ARGV[2])
end
if not ok then return {'in_progress'} end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'in_progress', 'token', token)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'new', token}
"""

_COMPLETE = """
if tonumber(redis.call('HGET', KEYS[1], 'token')) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'ctype', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

_RELEASE = """
if tonumber(redis.call('HGET', KEYS[1], 'token')) == tonumber(ARGV[1])
   and redis.call('HGET', KEYS[1], 'state') == 'in_progress' then
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class RedisIdempotency:
    """The primary backend: one Lua script per operation, keys scoped per merchant.

    ``nx`` and ``cache_results`` exist only so the experiments can switch off
    the lock's NX flag or the stored response and show what breaks.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_ttl_s: float = LOCK_TTL_S,
        response_ttl_s: int = RESPONSE_TTL_S,
        nx: bool = True,
        cache_results: bool = True,
    ) -> None:
        self.client = client
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.response_ttl_s = response_ttl_s
        self.nx = nx
        self.cache_results = cache_results
        self._begin = client.register_script(_BEGIN)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def keys(scope: str, key: str) -> list[str]:
        """Record, lock and fence keys; the hash tag keeps them in one Cluster slot."""
        tag = hashlib.sha256(f"{scope}\x1f{key}".encode()).hexdigest()[:32]
        base = f"idem:{{{tag}}}"
        return [base, f"{base}:lock", f"{base}:fence"]

    def begin(self, scope: str, key: str, fingerprint: str) -> Begin:
        args: list[str | int] = [
            fingerprint,
            self.lock_ttl_ms,
            self.response_ttl_s,
            "1" if self.nx else "0",
        ]
        try:
            reply = self._begin(self.keys(scope, key), args)
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(
                f"the idempotency store is unreachable ({type(exc).__name__}); retry shortly"
            ) from exc
        outcome = Outcome(as_text(reply[0]))
        if outcome is Outcome.NEW:
            return Begin(outcome, token=int(reply[1]))
        if outcome is Outcome.REPLAY:
            stored = StoredResponse(int(reply[1]), bytes(reply[2]), as_text(reply[3]))
            return Begin(outcome, response=stored)
        return Begin(outcome)

    def complete(self, scope: str, key: str, token: int, response: StoredResponse) -> bool:
        """Store the response for 24 h and free the lock; False, storing nothing, if fenced out.

        The Lua script compares ``token`` with the record's current one, so a
        request whose lock expired cannot overwrite the result of the request
        that took the key over.
        """
        args: list[str | int | bytes] = [
            token,
            response.status,
            response.body,
            response.content_type,
            self.response_ttl_s,
            "1" if self.cache_results else "0",
        ]
        try:
            return bool(self._complete(self.keys(scope, key)[:2], args))
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(f"could not store the response ({exc})") from exc

    def release(self, scope: str, key: str, token: int) -> None:
        try:
            self._release(self.keys(scope, key)[:2], [token])
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(f"could not release the lock ({exc})") from exc

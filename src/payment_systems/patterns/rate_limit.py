"""A client-side token bucket in Redis: many workers, one budget at the PSP.

PSPs limit request rates (Stripe: about 100 read and 100 write requests per
second in live mode, 25 in test mode). Sixteen workers each limiting
themselves to 100/s would send 1,600/s and be answered with 429s, which
cost retries and latency. A shared bucket keeps the *fleet* under the limit.

The bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per
second. Taking a token, refilling and recording the time happen in one Lua
script, so concurrent workers cannot both take the last token. Time comes
from the Redis server (``TIME``), so workers with skewed clocks still agree.

Two things keep it cheap and keep it from hurting payments:

* **Leases.** With ``lease > 1`` a worker takes up to that many tokens in
  one round trip and spends them from memory for at most ``lease_ttl_s``;
  unspent ones are dropped, never returned. Every request still spends a
  token taken from the shared bucket, so the fleet stays within
  ``capacity + rate * (T + lease_ttl_s)`` over any window T, while the
  limiter costs a fraction of a Redis round trip per PSP call instead of one
  (the payment path's budget is two in total).
* **A dead Redis does not stop payments.** If the shared bucket cannot be
  reached, the worker limits itself with a private bucket of the same rate
  and capacity, and tries Redis again after ``retry_shared_after_s``. This
  is the breaker's `LocalWhenUnreachable` pattern: with
  ``IDEMPOTENCY_FALLBACK=sql`` payments go on while Redis is down, and a
  limiter that raised on every call would fail them all. Each worker then
  allows the fleet's whole rate, so the fleet may exceed it by its worker
  count until Redis returns; the PSP's own 429s, which the client retries
  after their ``Retry-After``, are the backstop. Skipping the limit
  altogether would remove even the per-worker bound.

In production, use your API gateway's limiter, Envoy's global rate limit
service, or a library such as ``limits`` (Python) with a Redis backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from payment_systems.errors import PaymentSystemsError

_LUA_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[4])
end
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local most = tonumber(ARGV[5]) or wanted
local wait_ms = 0
local allowed = 0
local taken = 0
if tokens >= wanted then
  taken = math.max(wanted, math.min(most, math.floor(tokens)))
  tokens = tokens - taken
  allowed = 1
else
  wait_ms = math.ceil((wanted - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait_ms, tostring(taken)}
"""

log = logging.getLogger(__name__)


class RateLimited(PaymentSystemsError):
    """No token within the caller's patience; back off and retry later."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, name: str, wait_s: float) -> None:
        super().__init__(
            f"rate limit {name!r} has no capacity for {wait_s:.3f}s; retry after that",
            limiter=name,
        )
        self.retry_after_s = wait_s


class LocalBucket:
    """The same token bucket in this process's memory (thread-safe, monotonic clock).

    `TokenBucket` falls back to it while Redis is unreachable.
    """

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self._tokens = capacity
        self._at: float | None = None
        self._lock = threading.Lock()

    def take(self, wanted: float, most: float) -> tuple[float, float]:
        """As the Lua script does: (tokens taken, 0.0), or (0.0, seconds until ``wanted``)."""
        with self._lock:
            now = self.clock()
            elapsed = 0.0 if self._at is None else max(0.0, now - self._at)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            self._at = now
            if self._tokens < wanted:
                return 0.0, (wanted - self._tokens) / self.rate
            taken = max(wanted, min(most, float(int(self._tokens))))
            self._tokens -= taken
            return taken, 0.0


class TokenBucket:
    """A named token bucket shared through Redis by every process that uses the name.

    ``clock_ms`` exists for tests; by default the Redis server's clock is used.
    ``lease`` (tokens per round trip) and ``lease_ttl_s`` trade a little burst
    for far fewer round trips; the default, 1, takes each token from Redis.
    While Redis is unreachable, a per-process `LocalBucket` stands in (see
    the module docstring for why that, and not failing or skipping).
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        rate: float,
        capacity: float,
        clock_ms: Callable[[], int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lease: float = 1,
        lease_ttl_s: float = 0.25,
        retry_shared_after_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"need rate > 0 and capacity >= 1, got {rate=}, {capacity=}")
        if not 1 <= lease <= capacity or lease_ttl_s <= 0:
            raise ValueError(f"need 1 <= lease <= capacity and lease_ttl_s > 0, got {lease=}")
        self.name = name
        self.rate = rate
        self.capacity = capacity
        self.key = f"ratelimit:{{{name}}}"
        self._take = client.register_script(_LUA_TAKE)
        self.clock_ms = clock_ms
        self.sleep = sleep
        self.lease = lease
        self.lease_ttl_s = lease_ttl_s
        self.retry_shared_after_s = retry_shared_after_s
        self.monotonic = monotonic
        self.local = LocalBucket(rate, capacity, monotonic)
        self._shared_down_until: float | None = None  # monotonic; None while Redis answers
        self._leased = 0.0
        self._leased_until = 0.0
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """False while the bucket runs on its local fallback because Redis is unreachable."""
        return self._shared_down_until is None

    def try_acquire(self, tokens: float = 1) -> float:
        """Take ``tokens`` if available: 0.0 if taken, else the seconds to wait."""
        with self._lock:
            if self._leased >= tokens and self.monotonic() < self._leased_until:
                self._leased -= tokens
                return 0.0
        most = max(tokens, self.lease)
        taken, wait = self._take_shared(tokens, most)
        if taken and most > tokens:
            with self._lock:  # a fresh lease replaces what is left of an old one
                self._leased = taken - tokens
                self._leased_until = self.monotonic() + self.lease_ttl_s
        return wait

    def _take_shared(self, wanted: float, most: float) -> tuple[float, float]:
        """(taken, wait) from Redis, or from the local bucket while Redis is unreachable."""
        down_until = self._shared_down_until
        if down_until is not None and self.monotonic() < down_until:
            return self.local.take(wanted, most)
        now = "" if self.clock_ms is None else str(self.clock_ms())
        try:
            allowed, wait_ms, taken = self._take(
                [self.key], [self.rate, self.capacity, wanted, now, most]
            )
        except redis.RedisError as exc:
            if down_until is None:
                log.warning(
                    "rate limit %r: Redis unreachable (%s); limiting this process alone "
                    "until it answers",
                    self.name,
                    type(exc).__name__,
                )
            self._shared_down_until = self.monotonic() + self.retry_shared_after_s
            return self.local.take(wanted, most)
        if down_until is not None:
            log.info("rate limit %r: Redis answers again; the fleet shares one bucket", self.name)
            self._shared_down_until = None
        if not allowed:
            return 0.0, int(wait_ms) / 1000
        return float(taken), 0.0

    def acquire(self, tokens: float = 1, *, timeout_s: float = 30.0) -> float:
        """Block until ``tokens`` are taken; returns the time spent waiting.

        Raises `RateLimited` rather than wait longer than ``timeout_s``.
        """
        waited = 0.0
        while True:
            wait = self.try_acquire(tokens)
            if wait == 0.0:
                return waited
            if waited + wait > timeout_s:
                raise RateLimited(self.name, wait)
            self.sleep(wait)
            waited += wait

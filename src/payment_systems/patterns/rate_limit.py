"""A client-side token bucket in Redis: many workers, one budget at the PSP.

PSPs limit request rates (Stripe: about 100 read and 100 write requests per
second in live mode, 25 in test mode). Sixteen workers each limiting
themselves to 100/s would send 1,600/s and be answered with 429s, which
cost retries and latency. A shared bucket keeps the *fleet* under the limit.

The bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per
second. Taking a token, refilling and recording the time happen in one Lua
script, so concurrent workers cannot both take the last token. Time comes
from the Redis server (``TIME``), so workers with skewed clocks still agree.

In production, use your API gateway's limiter, Envoy's global rate limit
service, or a library such as ``limits`` (Python) with a Redis backend.
"""

from __future__ import annotations

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
local wait_ms = 0
local allowed = 0
if tokens >= wanted then
  tokens = tokens - wanted
  allowed = 1
else
  wait_ms = math.ceil((wanted - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""


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


class TokenBucket:
    """A named token bucket shared through Redis by every process that uses the name.

    ``clock_ms`` exists for tests; by default the Redis server's clock is used.
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
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError(f"need rate > 0 and capacity >= 1, got {rate=}, {capacity=}")
        self.name = name
        self.rate = rate
        self.capacity = capacity
        self.key = f"ratelimit:{{{name}}}"
        self._take = client.register_script(_LUA_TAKE)
        self.clock_ms = clock_ms
        self.sleep = sleep

    def try_acquire(self, tokens: float = 1) -> float:
        """Take ``tokens`` if available: 0.0 if taken, else the seconds to wait."""
        now = "" if self.clock_ms is None else str(self.clock_ms())
        allowed, wait_ms = self._take([self.key], [self.rate, self.capacity, tokens, now])
        return 0.0 if allowed else int(wait_ms) / 1000

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

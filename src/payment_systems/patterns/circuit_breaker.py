"""Circuit breaker: stop calling a dependency that is failing, and probe for its return.

Without one, every request to a PSP that is down waits for its full timeout
and retries, so threads pile up, latency explodes for *every* customer, and
the retries add load to a provider that is trying to recover. The breaker
counts failures in a rolling window; past a threshold it **opens** and calls
fail at once with `CircuitOpen`. After ``reset_timeout_s`` it lets a few
**half-open** probes through: a success closes it, a failure reopens it.

::

    CLOSED ──N failures in window──▶ OPEN ──reset timeout──▶ HALF_OPEN
       ▲                                ▲                        │
       └────────── probe succeeds ──────┼──── probe fails ───────┘

Only failures that say the *dependency* is unhealthy count: 5xx, timeouts,
refused connections. A card decline is the PSP working correctly.

State lives behind `BreakerStore`: `MemoryBreakerStore` for one process,
`RedisBreakerStore` to share one breaker across every worker, so that 16
processes do not each need 5 failures to notice the PSP is down.

In production, use ``pybreaker`` (Python; supports Redis state) or
resilience4j (JVM). This one exists to show the state machine; unlike
pybreaker's consecutive-failure counter it uses a time window, so a trickle of
failures spread over hours does not trip it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis

from payment_systems.errors import PaymentSystemsError
from payment_systems.infra.redis import as_text


class BreakerState(StrEnum):
    """The three states of the breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(PaymentSystemsError):
    """The breaker is open: the call was not attempted. Retry after ``retry_after_s``."""

    code = "circuit_open"
    http_status = 503

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(
            f"circuit {name!r} is open after repeated failures; not calling it for "
            f"{retry_after_s:.1f}s more",
            breaker=name,
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds. The defaults trip on 5 failures within 30 s and probe after 15 s."""

    failure_threshold: int = 5
    window_s: float = 30.0
    reset_timeout_s: float = 15.0
    half_open_max_calls: int = 1


@dataclass(frozen=True, slots=True)
class Permit:
    """The store's answer to "may I call?"."""

    allowed: bool
    state: BreakerState
    retry_after_s: float = 0.0


class BreakerStore(Protocol):
    """Atomic state transitions; each method is one indivisible step."""

    def acquire(self, name: str, now: float, config: BreakerConfig) -> Permit: ...

    def success(self, name: str, now: float) -> BreakerState: ...

    def failure(self, name: str, now: float, config: BreakerConfig) -> BreakerState: ...

    def state(self, name: str, now: float, config: BreakerConfig) -> BreakerState: ...


class MemoryBreakerStore:
    """State for breakers inside one process, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, BreakerState] = {}
        self._opened_at: dict[str, float] = {}
        self._probes: dict[str, int] = {}
        self._failures: dict[str, deque[float]] = {}

    def _current(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        state = self._state.get(name, BreakerState.CLOSED)
        if state is BreakerState.OPEN and now - self._opened_at[name] >= config.reset_timeout_s:
            state = self._state[name] = BreakerState.HALF_OPEN
            self._probes[name] = 0
        return state

    def acquire(self, name: str, now: float, config: BreakerConfig) -> Permit:
        with self._lock:
            state = self._current(name, now, config)
            if state is BreakerState.OPEN:
                wait = self._opened_at[name] + config.reset_timeout_s - now
                return Permit(False, state, wait)
            if state is BreakerState.HALF_OPEN:
                if self._probes.get(name, 0) >= config.half_open_max_calls:
                    return Permit(False, state, config.reset_timeout_s)
                self._probes[name] = self._probes.get(name, 0) + 1
            return Permit(True, state)

    def success(self, name: str, now: float) -> BreakerState:  # noqa: ARG002 - same shape as Redis
        with self._lock:
            if self._state.get(name) is BreakerState.HALF_OPEN:
                self._state[name] = BreakerState.CLOSED
                self._failures.pop(name, None)
            return self._state.get(name, BreakerState.CLOSED)

    def failure(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        with self._lock:
            state = self._current(name, now, config)
            if state is BreakerState.HALF_OPEN:
                return self._open(name, now)
            failures = self._failures.setdefault(name, deque())
            failures.append(now)
            while failures and failures[0] <= now - config.window_s:
                failures.popleft()
            if state is BreakerState.CLOSED and len(failures) >= config.failure_threshold:
                return self._open(name, now)
            return state

    def _open(self, name: str, now: float) -> BreakerState:
        self._state[name] = BreakerState.OPEN
        self._opened_at[name] = now
        self._failures.pop(name, None)
        return BreakerState.OPEN

    def state(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        with self._lock:
            return self._current(name, now, config)


# One Lua script per transition: read state, decide, write, all in one atomic step.
_LUA_CURRENT = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
  if tonumber(ARGV[1]) - opened >= tonumber(ARGV[2]) then
    state = 'half_open'
    redis.call('HSET', KEYS[1], 'state', state, 'probes', 0)
  end
end
"""
_LUA_ACQUIRE = (
    _LUA_CURRENT
    + """
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
  return {0, state, tostring(opened + tonumber(ARGV[2]) - tonumber(ARGV[1]))}
end
if state == 'half_open' then
  local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
  if probes >= tonumber(ARGV[3]) then return {0, state, ARGV[2]} end
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
end
return {1, state, '0'}
"""
)
_LUA_FAILURE = (
    _LUA_CURRENT
    + """
local now = tonumber(ARGV[1])
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1])
  redis.call('DEL', KEYS[2])
  return 'open'
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4]) * 1000))
if state == 'closed' and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1])
  redis.call('DEL', KEYS[2])
  return 'open'
end
return state
"""
)
_LUA_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'closed')
  redis.call('DEL', KEYS[2])
  return 'closed'
end
return state
"""
_LUA_STATE = _LUA_CURRENT + "\nreturn state\n"


class RedisBreakerStore:
    """Breaker state in Redis, shared by every process that uses the same name.

    Use wall-clock time (the default clock of `CircuitBreaker`) with it: the
    processes compare timestamps written by each other.
    """

    def __init__(self, client: redis.Redis, prefix: str = "breaker") -> None:
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_LUA_ACQUIRE)
        self._failure = client.register_script(_LUA_FAILURE)
        self._success = client.register_script(_LUA_SUCCESS)
        self._state = client.register_script(_LUA_STATE)

    def _keys(self, name: str) -> list[str]:
        base = f"{self.prefix}:{{{name}}}"  # hash tag: both keys in one Redis Cluster slot
        return [base, f"{base}:failures"]

    def acquire(self, name: str, now: float, config: BreakerConfig) -> Permit:
        allowed, state, wait = self._acquire(
            self._keys(name), [repr(now), config.reset_timeout_s, config.half_open_max_calls]
        )
        return Permit(bool(allowed), BreakerState(as_text(state)), max(0.0, float(as_text(wait))))

    def success(self, name: str, now: float) -> BreakerState:
        return BreakerState(as_text(self._success(self._keys(name), [repr(now)])))

    def failure(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        token = uuid.uuid4().hex  # a unique member: two failures at the same instant both count
        args: list[str | float] = [
            repr(now),
            config.reset_timeout_s,
            token,
            config.window_s,
            config.failure_threshold,
        ]
        return BreakerState(as_text(self._failure(self._keys(name), args)))

    def state(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        state = self._state(self._keys(name), [repr(now), config.reset_timeout_s])
        return BreakerState(as_text(state))


class CachedBreakerStore:
    """A shared store read at most every ``ttl_s`` per process while the breaker is closed.

    With `RedisBreakerStore` alone, every PSP call costs two Redis round trips
    (may I call? it worked), which is most of the Redis traffic of a payment.
    While the breaker is closed both answers are known in advance: yes, and
    nothing changes. So this wrapper answers them from memory for ``ttl_s``
    after it last saw "closed", and goes to the shared store only for
    failures (they must be counted fleet-wide), for probes, and when its
    view is stale. The price: after another worker opens the breaker, this
    one may send calls for up to ``ttl_s`` more (250 ms by default), a few
    requests against seconds of outage.
    """

    def __init__(self, inner: BreakerStore, ttl_s: float = 0.25) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self._closed_seen: dict[str, float] = {}  # name -> when the shared store said closed

    def _fresh_closed(self, name: str, now: float) -> bool:
        seen = self._closed_seen.get(name)
        return seen is not None and 0 <= now - seen < self.ttl_s

    def _remember(self, name: str, now: float, state: BreakerState) -> BreakerState:
        if state is BreakerState.CLOSED:
            self._closed_seen[name] = now
        else:
            self._closed_seen.pop(name, None)
        return state

    def acquire(self, name: str, now: float, config: BreakerConfig) -> Permit:
        if self._fresh_closed(name, now):
            return Permit(True, BreakerState.CLOSED)
        permit = self.inner.acquire(name, now, config)
        self._remember(name, now, permit.state)
        return permit

    def success(self, name: str, now: float) -> BreakerState:
        if self._fresh_closed(name, now):
            return BreakerState.CLOSED  # a success while closed changes nothing
        return self._remember(name, now, self.inner.success(name, now))

    def failure(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        return self._remember(name, now, self.inner.failure(name, now, config))

    def state(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        return self.inner.state(name, now, config)


class LocalWhenUnreachable:
    """A shared store, and this worker's own memory while the shared one is unreachable.

    The breaker's state lives in Redis so the fleet agrees about the PSP. But
    if Redis dies, a breaker that raises on every read would fail every PSP
    call, turning a Redis outage into a payments outage even where payments
    could go on (``IDEMPOTENCY_FALLBACK=sql``). So each worker falls back to a
    private breaker until Redis answers again: the fleet trips a little
    later (each worker counts its own failures), but never trips *because*
    of Redis.
    """

    def __init__(self, shared: BreakerStore, local: BreakerStore | None = None) -> None:
        self.shared = shared
        self.local = local or MemoryBreakerStore()

    def acquire(self, name: str, now: float, config: BreakerConfig) -> Permit:
        try:
            return self.shared.acquire(name, now, config)
        except redis.RedisError:
            return self.local.acquire(name, now, config)

    def success(self, name: str, now: float) -> BreakerState:
        try:
            return self.shared.success(name, now)
        except redis.RedisError:
            return self.local.success(name, now)

    def failure(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        try:
            return self.shared.failure(name, now, config)
        except redis.RedisError:
            return self.local.failure(name, now, config)

    def state(self, name: str, now: float, config: BreakerConfig) -> BreakerState:
        try:
            return self.shared.state(name, now, config)
        except redis.RedisError:
            return self.local.state(name, now, config)


class CircuitBreaker:
    """Guard calls to one dependency: ``with breaker.guard(): call()``.

    Examples:
        >>> config = BreakerConfig(failure_threshold=2)
        >>> breaker = CircuitBreaker("psp", config, clock=lambda: 0.0)
        >>> for _ in range(2):
        ...     breaker.record_failure()
        >>> breaker.state
        <BreakerState.OPEN: 'open'>
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        store: BreakerStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.store: BreakerStore = store or MemoryBreakerStore()
        self.clock = clock

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker past its timeout reports half-open)."""
        return self.store.state(self.name, self.clock(), self.config)

    def before_call(self) -> None:
        """Raise `CircuitOpen` unless a call may go ahead (a probe, when half-open)."""
        permit = self.store.acquire(self.name, self.clock(), self.config)
        if not permit.allowed:
            raise CircuitOpen(self.name, permit.retry_after_s)

    def record_success(self) -> None:
        """A healthy answer: closes a half-open breaker."""
        self.store.success(self.name, self.clock())

    def record_failure(self) -> None:
        """An unhealthy answer: counts toward opening, or reopens a half-open breaker."""
        self.store.failure(self.name, self.clock(), self.config)

    @contextmanager
    def guard(self, is_failure: Callable[[BaseException], bool] = lambda _: True) -> Iterator[None]:
        """Run a block under the breaker; ``is_failure`` says which exceptions count."""
        self.before_call()
        try:
            yield
        except BaseException as exc:
            if is_failure(exc):
                self.record_failure()
            else:
                self.record_success()
            raise
        self.record_success()

"""Everything a worker needs, built once at start-up from the environment.

Nothing is created at import time: `build_runtime` is called by the app
factory, so tests can build a runtime on their own database, Redis and
sandbox, and ``payment-systems serve`` builds one per worker process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.api.watchdog import RssWatchdog
from payment_systems.chaos.leak import Leak
from payment_systems.chargebacks.prevention import ThreeDSPolicy
from payment_systems.chargebacks.service import DisputeService
from payment_systems.config import Settings
from payment_systems.core.idempotency import IdempotencyBackend, RedisIdempotency
from payment_systems.core.idempotency_fallback import FallbackIdempotency
from payment_systems.core.idempotency_sql import SqlIdempotency
from payment_systems.core.merchants import authenticate, hash_key
from payment_systems.core.payments import PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory
from payment_systems.fraud.velocity import VelocityRules
from payment_systems.infra.engines import create_engine
from payment_systems.infra.redis import connect_redis
from payment_systems.integrations.psp_disputes import DisputeGateway
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.integrations.webhook_handler import WebhookHandler
from payment_systems.monitoring.metrics import PaymentMetrics
from payment_systems.patterns.circuit_breaker import (
    BreakerConfig,
    CachedBreakerStore,
    CircuitBreaker,
    LocalWhenUnreachable,
    RedisBreakerStore,
)
from payment_systems.patterns.outbox import OutboxRelay
from payment_systems.patterns.rate_limit import TokenBucket

MAX_BODY_BYTES = 16 * 1024
# Stripe's events are a few KiB (a dispute with its charge, ~10 KiB); 256 KiB is room to
# spare. The webhook route is unauthenticated until the signature is checked, and that
# check needs the whole body: without a cap, anyone can make a worker buffer gigabytes.
MAX_WEBHOOK_BYTES = 256 * 1024


@dataclass
class Runtime:
    """The resources behind one API process."""

    sessions: sessionmaker[Session]
    redis: redis.Redis
    idempotency: IdempotencyBackend
    service: PaymentService
    webhooks: WebhookHandler
    metrics: PaymentMetrics
    disputes: DisputeService | None = None
    idempotency_layer: bool = True  # off only in the benchmark that measures its overhead
    admission_limit: int = 16  # requests in flight in this worker before shedding (0: none)
    max_body_bytes: int = MAX_BODY_BYTES
    max_webhook_bytes: int = MAX_WEBHOOK_BYTES  # POST /v1/webhooks/psp, refused before HMAC
    leak: Leak | None = None  # chaos only (CHAOS_LEAK_FILE)
    watchdog: RssWatchdog | None = None  # WORKER_MAX_RSS_GROWTH_MB
    _merchants: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        """The engine behind ``sessions`` (for the outbox relay, the janitor, scripts)."""
        bind = self.sessions.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    def merchant_for(self, api_key: str) -> str | None:
        """The merchant id owning ``api_key`` (cached: keys are immutable once issued)."""
        digest = hash_key(api_key)
        cached = self._merchants.get(digest)
        if cached is not None:
            return cached
        with self.sessions() as session:
            merchant = authenticate(session, api_key)
        if merchant is None:
            return None
        self._merchants[digest] = merchant.id
        return merchant.id


def psp_rate_limiter(client: redis.Redis, rate: float) -> TokenBucket | None:
    """The fleet's one budget at the PSP (``PSP_RATE_LIMIT`` requests/s), or None if 0.

    Every worker of every instance that shares the Redis shares the bucket, so
    sixteen workers together stay under the PSP's limit instead of each using
    all of it and being answered with 429s. A tenth of a second's budget is the
    burst; each worker leases up to half of that per Redis round trip, because
    a round trip per PSP call would blow the payment path's budget of two. While
    Redis is unreachable each worker limits itself instead of failing payments
    (see `payment_systems.patterns.rate_limit`).
    """
    if rate <= 0:
        return None
    capacity = max(1.0, rate / 10)
    return TokenBucket(client, "psp", rate=rate, capacity=capacity, lease=max(1.0, capacity / 2))


def build_runtime(
    settings: Settings | None = None,
    *,
    psp: PSPClient | None = None,
    redis_client: redis.Redis | None = None,
    idempotency: IdempotencyBackend | None = None,
    migrate: bool = False,
) -> Runtime:
    """Connect to the configured (or embedded) services; ``migrate`` applies migrations first."""
    settings = settings or Settings.from_env()
    # A bounded pool that gives up quickly: when the database is saturated, a request
    # waits at most db_pool_timeout_s for a connection and then gets a 503, instead of
    # holding a worker thread for SQLAlchemy's default 30 s.
    in_memory = settings.database_url in ("sqlite://", "sqlite:///:memory:")  # one connection
    pool: dict[str, object] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout_s,
    }
    if settings.database_url.startswith("postgres") and settings.db_lock_timeout_s > 0:
        # ...and a lock held elsewhere gets the same treatment: without lock_timeout a
        # `LOCK TABLE` or a runaway transaction holds every request (and its pooled
        # connection) until it ends; with it, the wait ends in a 503 database_busy.
        ms = int(settings.db_lock_timeout_s * 1000)
        pool["connect_args"] = {"options": f"-c lock_timeout={ms}"}
    engine = create_engine(settings.database_url, **({} if in_memory else pool))
    if migrate:
        upgrade(engine)
    sessions = session_factory(engine)
    client = redis_client or connect_redis(settings.redis_url)
    if psp is None:
        # One breaker for the whole fleet: every worker sees the same PSP health
        # (each worker's own, while Redis is unreachable).
        shared = LocalWhenUnreachable(RedisBreakerStore(client))
        config = BreakerConfig(reset_timeout_s=settings.psp_breaker_reset_s)
        breaker = CircuitBreaker("psp", config, store=CachedBreakerStore(shared))
        psp = PSPClient.from_env(
            breaker=breaker,
            limiter=psp_rate_limiter(client, settings.psp_rate_limit),
            read_timeout_s=settings.psp_read_timeout_s,
        )
    crash = _crash_at(settings.crash_at) if settings.crash_at else None
    fraud = VelocityRules(client) if settings.fraud_rules else None
    three_ds = ThreeDSPolicy(settings.three_ds_threshold)
    service = (
        PaymentService(sessions, psp, crash_point=crash, fraud=fraud, three_ds=three_ds)
        if crash
        else PaymentService(sessions, psp, fraud=fraud, three_ds=three_ds)
    )
    disputes = DisputeService(sessions, DisputeGateway(psp))
    return Runtime(
        sessions=sessions,
        redis=client,
        idempotency=idempotency or _idempotency(settings, client, engine),
        service=service,
        webhooks=WebhookHandler(sessions, service, settings.webhook_secrets, disputes=disputes),
        disputes=disputes,
        idempotency_layer=settings.idempotency_layer,
        admission_limit=settings.admission_limit,
        leak=Leak(settings.chaos_leak_file) if settings.chaos_leak_file else None,
        watchdog=RssWatchdog(settings.worker_max_rss_growth_mb).start()
        if settings.worker_max_rss_growth_mb > 0
        else None,
        metrics=PaymentMetrics(
            backlog=OutboxRelay(engine, client).backlog, breaker=lambda: _breaker_state(psp)
        ),
    )


def _idempotency(settings: Settings, client: redis.Redis, engine: Engine) -> IdempotencyBackend:
    """Redis, failing closed; or Redis with the SQL table behind it (``IDEMPOTENCY_FALLBACK``)."""
    primary = RedisIdempotency(client, lock_ttl_s=settings.lock_ttl_s)
    if settings.idempotency_fallback == "sql":
        return FallbackIdempotency(
            primary, SqlIdempotency(engine, lock_timeout_s=settings.lock_ttl_s)
        )
    return primary


def _breaker_state(psp: PSPClient) -> str:
    try:
        return str(psp.breaker.state.value)
    except Exception:
        return "unknown"


def _crash_at(target: str) -> Callable[[str], None]:
    """Chaos hook: SIGKILL this worker when it reaches recovery point ``target``.

    Set with ``PAYMENT_SYSTEMS_CRASH_AT=psp_called`` (or ``payment_created``,
    ``recorded``). The crash tests use it to prove that a retry after a crash
    at any point still charges exactly once.
    """

    def crash_point(point: str) -> None:
        if point == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return crash_point

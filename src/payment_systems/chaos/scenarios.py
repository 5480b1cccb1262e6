"""The five failures of the study plan's Day 6, each as something we really do to the system.

Every scenario says how the system is started (`options`), how the fault
is put in (`inject`) and taken out (`heal`), which mechanism is meant to
hold (`prevention`), and what it promises the customer (`expectations`,
checked against the run). Durations are the study plan's, multiplied by
``--scale``, with a floor below which the fault would be over before the
system could notice it.

* ``db-pool-exhausted``: an outside ``LOCK TABLE payments`` on PostgreSQL. The
  bounded pool and ``lock_timeout`` answer 503 ``database_busy`` fast.
* ``redis-down``: ``SIGKILL`` of redis-server, restarted empty. Fail closed:
  503 ``idempotency_unavailable``.
* ``redis-down-sql-fallback``: the same, with ``IDEMPOTENCY_FALLBACK=sql``:
  payments go on.
* ``psp-500``: the sandbox answers 500 *after* charging. Retries, the circuit
  breaker and the janitor.
* ``network-partition``: a proxy blackholes the API's traffic to the PSP.
  Timeouts give ``unknown``; the janitor resolves it.
* ``memory-leak``: each request keeps 4 MiB (`payment_systems.chaos.leak`).
  The RSS watchdog recycles workers gracefully.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the CLI lists scenarios without importing the whole system
    from payment_systems.load_tests.system import RunningSystem

LEAK_KIB = 4096  # per payment request while the leak is on
RECYCLE_GROWTH_MB = 64  # WORKER_MAX_RSS_GROWTH_MB in the memory scenario


@dataclass
class Context:
    """What a scenario needs while it runs: the system, a scratch directory, its own state."""

    system: RunningSystem
    tmp: Path
    scale: float
    state: dict[str, Any] = field(default_factory=dict)


class Scenario:
    """One failure. Subclasses fill in the fault and what they promise."""

    name = ""
    title = ""  # the study plan's words
    window_s = 120.0  # how long the fault lasts at scale 1
    min_window_s = 4.0
    database = "postgres"
    prevention = ""

    def window(self, scale: float) -> float:
        return max(self.min_window_s, self.window_s * scale)

    proxy_psp = False  # put a FaultProxy between the API and the PSP

    def options(self, scale: float, tmp: Path) -> dict[str, str]:  # noqa: ARG002
        """Settings for the system's environment (the breaker probes at a scaled interval)."""
        return {"PSP_BREAKER_RESET_S": f"{max(2.0, 15.0 * scale):g}"}

    def inject(self, ctx: Context) -> None:
        raise NotImplementedError

    def heal(self, ctx: Context) -> None:
        raise NotImplementedError

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:  # noqa: ARG002
        """Scenario-specific promises, by name; the runner adds the common ones."""
        return {}


class DatabasePoolExhausted(Scenario):
    name = "db-pool-exhausted"
    title = "Database connection pool exhausted"
    window_s = 60.0
    min_window_s = 6.0
    prevention = (
        "a bounded pool (DB_POOL_SIZE, no overflow) that waits DB_POOL_TIMEOUT_S for a "
        "connection, and PostgreSQL's lock_timeout (DB_LOCK_TIMEOUT_S): both end in a 503 "
        "database_busy with Retry-After instead of a request hanging for the outage"
    )

    def options(self, scale: float, tmp: Path) -> dict[str, str]:
        return {
            **super().options(scale, tmp),
            "DB_POOL_SIZE": "4",
            "DB_POOL_TIMEOUT_S": "1",
            "DB_LOCK_TIMEOUT_S": "1",
        }

    def inject(self, ctx: Context) -> None:
        # A migration or a runaway report taking the table: every query on it waits,
        # holding its pooled connection, until the pool is empty.
        import sqlalchemy as sa

        from payment_systems.infra import create_engine

        engine = create_engine(ctx.system.database_url)
        conn = engine.connect()
        conn.execute(sa.text("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE"))
        ctx.state.update(engine=engine, conn=conn)

    def heal(self, ctx: Context) -> None:
        conn, engine = ctx.state.pop("conn"), ctx.state.pop("engine")
        conn.rollback()
        conn.close()
        engine.dispose()

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:
        impact = result["impact"]
        return {
            "errors are 503 database_busy, nothing else": set(impact["errors"])
            <= {"503 database_busy"},
            "no request waited longer than pool + lock timeouts + 3 s": impact["max_ms"] < 5_000,
        }


class RedisDown(Scenario):
    name = "redis-down"
    title = "Redis cache completely fails"
    window_s = 60.0
    prevention = (
        "fail closed: without its lock store the API refuses payment creation with 503 "
        "idempotency_unavailable + Retry-After; reads and webhooks go on; the database's "
        "unique (merchant, key) and the PSP's idempotency key stop duplicates when Redis "
        "returns empty"
    )

    def inject(self, ctx: Context) -> None:
        assert ctx.system.redis_server is not None
        ctx.system.redis_server.kill()

    def heal(self, ctx: Context) -> None:
        assert ctx.system.redis_server is not None
        ctx.system.redis_server.start()

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:
        fail_closed = {"503 idempotency_unavailable"}
        errors = set(result["impact"]["errors"])
        return {"errors are 503 idempotency_unavailable, nothing else": errors <= fail_closed}


class RedisDownSqlFallback(RedisDown):
    name = "redis-down-sql-fallback"
    title = "Redis cache completely fails (IDEMPOTENCY_FALLBACK=sql)"
    prevention = (
        "fall back: idempotency locks move to the database's idempotency_keys table "
        "(core/idempotency_fallback.py) and the circuit breaker to each worker's memory, so "
        "payments go on while Redis is away"
    )

    def options(self, scale: float, tmp: Path) -> dict[str, str]:
        return {**super().options(scale, tmp), "IDEMPOTENCY_FALLBACK": "sql"}

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:
        return {
            "payments go on: under 2% errors in the window": result["impact"]["error_rate"] < 0.02
        }


class Psp500(Scenario):
    name = "psp-500"
    title = "Stripe API returns 500 for 5 minutes"
    window_s = 300.0
    prevention = (
        "the PSP client retries with one idempotency key, the shared circuit breaker opens "
        "and fails calls fast (503 psp_unavailable), half-open probes close it after the "
        "outage, and the janitor asks the PSP about every payment left unknown"
    )

    def inject(self, ctx: Context) -> None:
        # phase=after: the PSP charges, then answers 500 (and stores the 500 for the
        # key, as Stripe does): the worst case, where the client cannot know.
        fault = {
            "kind": "error", "status": 500, "phase": "after",
            "path_prefix": "/v1/payment_intents", "duration_s": 3600,
        }  # fmt: skip
        httpx.post(
            f"{ctx.system.psp_url}/_sandbox/faults", json=fault, auth=(ctx.system.psp_key, "")
        ).raise_for_status()

    def heal(self, ctx: Context) -> None:
        httpx.delete(
            f"{ctx.system.psp_url}/_sandbox/faults", auth=(ctx.system.psp_key, "")
        ).raise_for_status()

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:
        return {"the circuit breaker opened": "psp_circuit" in result["detection"]["seen"]}


class NetworkPartition(Scenario):
    name = "network-partition"
    title = "Network partition between services (API → PSP)"
    window_s = 60.0
    prevention = (
        "a read timeout (PSP_READ_TIMEOUT_S) turns silence into an unknown outcome instead of "
        "a hung worker; the breaker stops new calls; the janitor asks the PSP and re-drives "
        "with the same idempotency key, so a request that crossed the partition late is "
        "not charged twice"
    )
    proxy_psp = True

    def options(self, scale: float, tmp: Path) -> dict[str, str]:
        return {**super().options(scale, tmp), "PSP_READ_TIMEOUT_S": "2"}

    def inject(self, ctx: Context) -> None:
        assert ctx.system.psp_proxy is not None
        ctx.system.psp_proxy.set_mode("blackhole")

    def heal(self, ctx: Context) -> None:
        assert ctx.system.psp_proxy is not None
        ctx.system.psp_proxy.set_mode("pass")


class MemoryLeak(Scenario):
    name = "memory-leak"
    title = "Memory leak during peak traffic"
    window_s = 120.0
    min_window_s = 10.0
    prevention = (
        f"an RSS watchdog per worker (WORKER_MAX_RSS_GROWTH_MB={RECYCLE_GROWTH_MB}) sends its "
        "worker SIGTERM; uvicorn drains it and starts a fresh one while the other worker "
        "serves; process_resident_memory_bytes on /metrics shows the growth"
    )

    def options(self, scale: float, tmp: Path) -> dict[str, str]:
        return {
            **super().options(scale, tmp),
            "CHAOS_LEAK_FILE": str(tmp / "leak"),
            "WORKER_MAX_RSS_GROWTH_MB": str(RECYCLE_GROWTH_MB),
        }

    def inject(self, ctx: Context) -> None:
        (ctx.tmp / "leak").write_text(str(LEAK_KIB))

    def heal(self, ctx: Context) -> None:
        with contextlib.suppress(FileNotFoundError):
            (ctx.tmp / "leak").unlink()

    def expectations(self, result: dict[str, Any]) -> dict[str, bool]:
        # Dropped means lost without an answer: a connection error, a timeout, a 500.
        # A 503 "overloaded" with Retry-After is an answer (admission control, while a
        # replacement starts on a busy 2-core machine), and the page counts those.
        dropped = set(result["impact"]["errors"]) - {"503 overloaded"}
        return {
            "at least one worker was recycled": result["recovery"]["workers_recycled"] >= 1,
            "no request was dropped (no connection error, timeout or 500)": not dropped,
        }


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        DatabasePoolExhausted(),
        RedisDown(),
        RedisDownSqlFallback(),
        Psp500(),
        NetworkPartition(),
        MemoryLeak(),
    )
}

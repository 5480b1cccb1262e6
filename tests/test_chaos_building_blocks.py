"""The pieces the chaos scenarios rely on, each proven on its own against real parts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from payment_systems.api.watchdog import RecycleLease, RssWatchdog
from payment_systems.chaos.failure_simulator import impact, recovery
from payment_systems.chaos.leak import Leak
from payment_systems.chaos.monitor import Sample
from payment_systems.chaos.proxy import FaultProxy
from payment_systems.cli import app as cli
from payment_systems.core.idempotency import (
    IdempotencyUnavailable,
    Outcome,
    RedisIdempotency,
    StoredResponse,
)
from payment_systems.core.idempotency_fallback import FallbackIdempotency
from payment_systems.core.idempotency_sql import SqlIdempotency
from payment_systems.core.merchants import create_merchant
from payment_systems.core.payments import CreatePayment, PaymentService
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra.redis import EmbeddedRedis
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient, RetryPolicy
from payment_systems.load_tests.payment_load import Samples
from payment_systems.money import Money
from payment_systems.patterns.circuit_breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    LocalWhenUnreachable,
    RedisBreakerStore,
)
from tests.conftest import _api_on

# -- Redis dies --------------------------------------------------------------------


def test_a_killed_redis_restarts_empty_at_the_same_url() -> None:
    with EmbeddedRedis() as server:
        client = server.client()
        client.set("k", "v")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert client.get("k") is None  # same URL, reconnected, memory gone


def test_fail_closed_reports_a_dead_store_as_unavailable_at_every_step() -> None:
    with EmbeddedRedis() as server:
        store = RedisIdempotency(server.client())
        begun = store.begin("m", "k", "fp")
        server.kill()
        with pytest.raises(IdempotencyUnavailable):
            store.complete("m", "k", begun.token, StoredResponse(201, b"{}"))
        with pytest.raises(IdempotencyUnavailable):
            store.begin("m", "k2", "fp")


def test_the_sql_fallback_takes_over_the_locks_while_redis_is_dead(
    sqlite_engine: Engine,
) -> None:
    upgrade(sqlite_engine)
    with EmbeddedRedis() as server:
        store = FallbackIdempotency(
            RedisIdempotency(server.client()), SqlIdempotency(sqlite_engine)
        )
        server.kill()
        first = store.begin("m", "k", "fp")
        assert first.outcome is Outcome.NEW
        assert store.begin("m", "k", "fp").outcome is Outcome.IN_PROGRESS  # SQL holds the lock
        store.complete("m", "k", first.token, StoredResponse(201, b'{"id":"pay_1"}'))
        replay = store.begin("m", "k", "fp")
        assert replay.outcome is Outcome.REPLAY
        assert replay.response is not None and replay.response.body == b'{"id":"pay_1"}'
        assert store.fallbacks == 3


def test_the_breaker_keeps_counting_in_worker_memory_while_redis_is_unreachable() -> None:
    with EmbeddedRedis() as server:
        store = LocalWhenUnreachable(RedisBreakerStore(server.client()))
        breaker = CircuitBreaker("psp", BreakerConfig(failure_threshold=2), store=store)
        server.kill()
        breaker.before_call()  # no exception: a dead Redis does not block PSP calls
        breaker.record_failure()
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN


# -- a lock held elsewhere (PostgreSQL) ---------------------------------------------


def test_a_table_lock_held_elsewhere_answers_503_database_busy_within_the_lock_timeout(
    pg_engine: Engine, redis_client: redis.Redis, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    body = {"amount": 900, "currency": "usd", "payment_method": "pm_card_visa"}
    with (
        _api_on(pg_engine, redis_client, psp_sandbox, psp_key,
                db_lock_timeout_s=0.5, fraud_rules=False) as api,
        pg_engine.connect() as holder,
    ):  # fmt: skip
        holder.execute(sa.text("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        busy = api.post("/v1/payments", body, key="locked-1")
        waited = time.monotonic() - started
        holder.rollback()
        retried = api.post("/v1/payments", body, key="locked-1")
    assert (busy.status_code, busy.json()["code"]) == (503, "database_busy")
    assert waited < 5
    assert retried.status_code == 201
    with pg_engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM payments")) == 1


# -- the janitor after a partition ----------------------------------------------------


def test_the_janitors_redrive_repeats_the_original_request_so_a_late_arrival_is_not_refused(
    sqlite_engine: Engine, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    upgrade(sqlite_engine)
    sessions = session_factory(sqlite_engine)
    with unit_of_work(sessions) as session:
        merchant, _key = create_merchant(session, "Partitioned Shop")
    command = CreatePayment(Money(1_234, "USD"), "pm_card_visa", metadata={"order": "A-17"})
    no_retry = RetryPolicy(max_attempts=1)
    with FaultProxy(psp_sandbox.url.split("//", 1)[1]) as proxy:
        cut = PSPClient(psp_key, f"http://{proxy.address}", retry=no_retry, read_timeout_s=0.5,
                        breaker=CircuitBreaker(f"c-{uuid.uuid4()}"))  # fmt: skip
        proxy.set_mode("blackhole")
        unknown = PaymentService(sessions, cut).create(merchant.id, "order-A-17", command)
        assert unknown.status == "unknown"
        direct = PSPClient(psp_key, psp_sandbox.url, breaker=CircuitBreaker(f"d-{uuid.uuid4()}"))
        [resolved] = PaymentService(sessions, direct).run_janitor(min_age_s=0)
        proxy.set_mode("pass")  # the held original now reaches the PSP, late
    assert resolved.status == "succeeded"
    # the original request, replayed as it was first sent, is the same payment at the PSP
    again = direct.authorize(
        merchant_id=merchant.id, payment_id=resolved.id, amount=Money(1_234, "USD"),
        payment_method="pm_card_visa", capture=True, metadata={"order": "A-17"},
    )  # fmt: skip
    assert again.id == resolved.psp_intent_id
    assert again.metadata["order"] == "A-17"


# -- memory leak ------------------------------------------------------------------------


def test_the_leak_keeps_memory_only_while_its_switch_file_exists(tmp_path: Path) -> None:
    leak = Leak(tmp_path / "leak")
    leak.maybe_leak()
    assert leak.leaked_bytes == 0
    (tmp_path / "leak").write_text("8")
    leak.maybe_leak()
    leak.maybe_leak()
    assert leak.leaked_bytes == 16 * 1024
    (tmp_path / "leak").unlink()
    leak.maybe_leak()
    assert leak.leaked_bytes == 16 * 1024  # stopping the leak frees nothing


def test_the_watchdog_recycles_once_when_growth_passes_the_limit(tmp_path: Path) -> None:
    readings = iter([100, 130, 160, 171, 400])  # MiB
    recycled: list[int] = []
    watchdog = RssWatchdog(
        70, read_rss=lambda: next(readings) * 2**20, recycle=lambda: recycled.append(1),
        jitter=0, lease=RecycleLease(tmp_path / "lease"),
    )  # fmt: skip
    assert [watchdog.check() for _ in range(4)] == [False, False, True, False]
    assert recycled == [1]  # once: a worker being drained is not signalled again


def test_sibling_workers_recycle_one_at_a_time(tmp_path: Path) -> None:
    now = [1000.0]
    lease = RecycleLease(tmp_path / "lease", spacing_s=5, clock=lambda: now[0])
    assert lease.claim() is True  # the first worker over its limit goes
    now[0] += 2
    assert lease.claim() is False  # its sibling waits while the replacement starts
    now[0] += 4
    assert lease.claim() is True


def test_workers_started_together_get_different_recycling_limits(tmp_path: Path) -> None:
    lease = RecycleLease(tmp_path / "lease")
    limits = {RssWatchdog(64, read_rss=lambda: 0, lease=lease).limit for _ in range(20)}
    assert len(limits) > 1  # jitter: they must not all be recycled at the same moment
    assert all(64 * 2**20 <= limit <= 96 * 2**20 for limit in limits)


# -- the report's arithmetic ------------------------------------------------------------


def _samples(points: list[tuple[float, str]]) -> Samples:
    samples = Samples()
    for at, status in points:
        samples.record(at, 0.05, status)
    return samples


def test_impact_counts_only_requests_sent_during_the_window() -> None:
    samples = _samples([(0.5, "201"), (1.0, "503"), (1.5, "201"), (2.5, "503")])
    window = impact(samples, 1.0, 2.0)
    assert window["requests"] == 2
    assert window["errors"] == {"503": 1}
    assert window["error_rate"] == 0.5


def test_recovery_needs_ready_and_five_successes_in_a_row_after_the_fault() -> None:
    points = [(3.0, "503"), (3.1, "201"), (3.2, "503"), *((3.3 + i / 10, "201") for i in range(5))]
    looks = [Sample(100.0 + t, t >= 0.2, {}, None, {}, (1, 2)) for t in (0.0, 0.1, 0.2)]
    result = recovery(_samples(points), looks, heal_rel=3.0, heal_at=100.0)
    assert result["automatic"] is True
    assert result["after_s"] == pytest.approx(0.3)


def test_chaos_refuses_an_unknown_scenario_and_names_the_real_ones() -> None:
    result = CliRunner().invoke(cli, ["chaos", "dns-outage"])
    assert result.exit_code == 2
    assert "db-pool-exhausted" in result.output

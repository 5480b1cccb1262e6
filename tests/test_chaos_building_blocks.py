"""The pieces the chaos scenarios rely on, each proven on its own against real parts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from typer.testing import CliRunner

from payment_systems.api.graceful import KEEP_ALIVE_S, graceful_options, is_draining
from payment_systems.api.problems import problem
from payment_systems.api.watchdog import RecycleLease, RssWatchdog
from payment_systems.chaos.failure_simulator import detection, impact, recovery
from payment_systems.chaos.leak import Leak
from payment_systems.chaos.monitor import Monitor, Sample
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
from payment_systems.infra.http import BackgroundServer
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
        [resolved] = PaymentService(sessions, direct).run_janitor(min_age_s=0).payments
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
    now, alive = [1000.0], {11, 12}
    lease = RecycleLease(tmp_path / "lease", clock=lambda: now[0], alive=alive.__contains__)
    lease.started()  # the first workers start serving
    now[0] += 30
    assert lease.claim(pid=11) is True  # the first worker over its limit goes
    now[0] += 20
    assert lease.claim(pid=12) is False  # 11 is still draining its keep-alive connections
    alive.discard(11)
    assert lease.claim(pid=12) is False  # 11 is gone, but its replacement is not serving yet
    now[0] += 1
    lease.started()  # the replacement
    assert lease.claim(pid=12) is True
    assert lease.claim(pid=13) is False


def test_a_recycle_whose_replacement_never_came_stops_holding_the_lease(tmp_path: Path) -> None:
    now = [1000.0]
    lease = RecycleLease(tmp_path / "lease", max_hold_s=60, clock=lambda: now[0],
                         alive=lambda _pid: False)  # fmt: skip
    assert lease.claim(pid=11) is True
    now[0] += 59
    assert lease.claim(pid=12) is False
    now[0] += 2
    assert lease.claim(pid=12) is True


def test_workers_started_together_get_different_recycling_limits(tmp_path: Path) -> None:
    lease = RecycleLease(tmp_path / "lease")
    limits = {RssWatchdog(64, read_rss=lambda: 0, lease=lease).limit for _ in range(20)}
    assert len(limits) > 1  # jitter: they must not all be recycled at the same moment
    assert all(64 * 2**20 <= limit <= 96 * 2**20 for limit in limits)


# -- a graceful recycle (api/graceful.py) -------------------------------------------------


_release = threading.Event()


async def _hello(scope: Scope, _receive: Receive, send: Send) -> None:
    """A plain ASGI app; ``/slow`` answers only once the test sets ``_release``."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.get_running_loop().run_in_executor(None, _release.wait, 10)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class _Worker(uvicorn.Server):
    """A uvicorn worker whose graceful shutdown (what SIGTERM starts) the test begins.

    ``main_loop`` is where uvicorn waits for SIGTERM; here it waits for
    `drain`, which starts the shutdown from inside the worker's event loop,
    so the test chooses exactly what the worker has read when it begins.
    """

    def __init__(self, **overrides: Any) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        options = {**graceful_options(), **overrides}
        super().__init__(uvicorn.Config(_hello, lifespan="off", log_level="warning", **options))
        self.waiting = threading.Event()
        self.thread = threading.Thread(target=self.run, kwargs={"sockets": [self.socket]})

    async def main_loop(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.go = asyncio.Event()
        self.waiting.set()
        await self.go.wait()  # then uvicorn's own shutdown(), the graceful drain

    def __enter__(self) -> _Worker:
        self.thread.start()
        assert self.waiting.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain()
        self.thread.join(15)
        self.socket.close()

    def drain(self) -> None:
        with contextlib.suppress(RuntimeError):  # already drained: its loop is closed
            self.loop.call_soon_threadsafe(self.go.set)

    def drain_once_a_request_is_unread(self) -> None:
        """Begin the drain while a request sits in the kernel, not yet read by the worker.

        The worker's loop blocks until the idle keep-alive connection has
        bytes to read, then wakes `main_loop`: uvicorn's shutdown (close the
        listener, then each connection's ``shutdown()``) runs before the loop
        reads them. On a busy worker this is the common case: the request
        arrives while the loop is doing something else.
        """
        holding = threading.Event()

        def hold() -> None:
            holding.set()
            [connection] = self.server_state.connections
            select.select([connection.transport.get_extra_info("socket")], [], [], 10)
            self.go.set()

        self.loop.call_soon_threadsafe(hold)
        assert holding.wait(10)


def test_graceful_recycle_does_not_drop_a_request_on_a_keep_alive_connection() -> None:
    # Issue 13: the chaos memory-leak run saw a ReadError while a worker was recycled.
    # Stock uvicorn closed the idle keep-alive connection on which this request had
    # just arrived: "connection reset by peer", and the client cannot know whether
    # its payment was taken.
    with _Worker() as worker, httpx.Client(base_url=worker.url) as client:
        assert client.get("/").status_code == 200  # the connection is now idle, kept alive
        worker.drain_once_a_request_is_unread()
        answer = client.post("/", content=b"{}")
        assert answer.status_code == 200
        assert answer.headers["connection"] == "close"  # the next one goes to a sibling
        worker.thread.join(10)
        assert not worker.thread.is_alive()  # and the drained worker exits


def test_a_response_finished_during_a_drain_tells_the_client_the_connection_closes() -> None:
    # Stock uvicorn closed such a connection right after the response without saying
    # so: the client pooled it and could send its next request into the close.
    _release.clear()
    with (
        _Worker() as worker,
        httpx.Client(base_url=worker.url) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        slow = pool.submit(client.get, "/slow")
        _wait_for(lambda: bool(worker.server_state.tasks))
        worker.drain()  # while /slow is in flight
        _wait_for(lambda: is_draining(worker.server_state))
        _release.set()
        answer = slow.result(10)
    assert answer.status_code == 200
    assert answer.headers["connection"] == "close"


def test_a_drain_closes_an_idle_connection_only_once_its_keep_alive_has_run_out() -> None:
    # A client may send on a connection it has kept idle for up to its own expiry
    # (httpx: 5 s); closing it any sooner risks closing it under a request.
    with _Worker(timeout_keep_alive=2) as worker, httpx.Client(base_url=worker.url) as client:
        assert client.get("/").status_code == 200
        worker.drain()
        _wait_for(lambda: is_draining(worker.server_state))
        time.sleep(0.5)
        assert len(worker.server_state.connections) == 1  # still open: it may be in use
        worker.thread.join(10)
        assert not worker.thread.is_alive()  # its keep-alive ran out: closed, and the worker left
    assert KEEP_ALIVE_S > 5  # and the real one outlasts httpx's idle expiry


# -- the monitor ---------------------------------------------------------------------


def test_monitor_treats_a_503_metrics_answer_as_a_sample_not_metrics() -> None:
    # Issue 13: with the database locked, /metrics (which reads the outbox backlog)
    # answered 503 database_busy; the monitor parsed the problem document as
    # Prometheus text and its thread died with a ValueError, failing the run.
    answers = {
        "/readyz": JSONResponse({"status": "degraded", "database": "down"}, status_code=503),
        "/metrics": problem(503, "database_busy", "every database connection is in use"),
    }

    async def route(request: Request) -> Response:
        return answers[request.url.path]

    app = Starlette(routes=[Route("/readyz", route), Route("/metrics", route)])
    with BackgroundServer(app) as server:
        monitor = Monitor(server.url, os.getpid(), interval_s=0.05).start()
        _wait_for(lambda: len(monitor.samples) >= 2)
        answers["/metrics"] = Response(
            b'# TYPE api_errors_total counter\napi_errors_total{code="database_busy"} 3\n',
            media_type="text/plain; version=0.0.4",
        )
        _wait_for(lambda: monitor.samples[-1].scraped)
        looks = monitor.stop()
    busy = looks[0]
    assert (busy.metrics, busy.counters, busy.rss_bytes) == ("503 database_busy", {}, None)
    assert not busy.scraped and not busy.ready
    assert looks[-1].counters == {'api_errors_total{code="database_busy"}': 3.0}


def test_a_failed_scrape_is_a_signal_and_never_a_baseline_of_zero() -> None:
    counted = {'api_errors_total{code="database_busy"}': 3.0}
    looks = [
        Sample(10.0, True, {}, None, counted, (1,)),
        Sample(10.2, True, {}, None, {}, (1,), metrics="no answer: ReadTimeout"),
        Sample(11.0, True, {}, None, {}, (1,), metrics="503 database_busy"),
        Sample(11.2, True, {}, None, counted, (1,)),
    ]
    seen = detection(looks, inject_at=10.5, heal_at=12.0)
    assert seen["signal"] == "/metrics unavailable: 503 database_busy"
    assert seen["seen"] == {"metrics": ["503 database_busy"]}
    assert seen["error_codes"] == {}  # 3 before, 3 after: the empty look was not a zero


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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

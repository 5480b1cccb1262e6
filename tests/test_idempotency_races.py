"""Races, crashes and expired locks over real HTTP: never two charges, never a lost payment."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from payment_systems.api.app import create_app
from payment_systems.api.runtime import build_runtime
from payment_systems.config import Settings
from payment_systems.core.merchants import create_merchant
from payment_systems.database.ledger_store import account_balances
from payment_systems.database.migrate import upgrade
from payment_systems.database.models import Payment
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra.http import BackgroundServer
from payment_systems.infra.redis import connect_redis
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.psp_sandbox.server import free_port
from payment_systems.integrations.stripe_client import PSPClient
from tests.conftest import ApiUnderTest

BODY = b'{"amount": 4200, "currency": "usd", "payment_method": "pm_card_visa"}'


def _send(url: str, api_key: str, key: str) -> tuple[int, bytes]:
    response = httpx.post(
        f"{url}/v1/payments",
        content=BODY,
        headers={
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
        timeout=60,
    )
    return response.status_code, response.content


def _process_sender(
    url: str, api_key: str, key: str, start_at: float, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    time.sleep(max(0.0, start_at - time.time()))
    out.put(_send(url, api_key, key))


def _psp_intents(sandbox_url: str, psp_key: str) -> int:
    response = httpx.get(
        f"{sandbox_url}/v1/payment_intents", params={"limit": 100}, auth=(psp_key, "")
    )
    return len(response.json()["data"])


def _fault(sandbox_url: str, psp_key: str, **spec: object) -> None:
    httpx.post(f"{sandbox_url}/_sandbox/faults", json=spec, auth=(psp_key, "")).raise_for_status()


def _payments(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM payments")).scalar_one())


def test_50_threads_and_4_processes_racing_one_key_charge_exactly_once(
    pg_api: ApiUnderTest, psp_sandbox: SandboxServer, pg_engine: Engine
) -> None:
    api = pg_api
    api.runtime.admission_limit = 0  # this race is about idempotency; shedding has its own tests
    # A slow card network keeps the first request in flight while the others arrive.
    _fault(psp_sandbox.url, api.psp_key, kind="latency", ms=300, duration_s=30)
    start_at = time.time() + 1.5
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_process_sender, args=(api.url, api.key_a, "race", start_at, queue))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    barrier = threading.Barrier(50)

    def thread_sender(_: int) -> tuple[int, bytes]:
        time.sleep(max(0.0, start_at - time.time()))
        barrier.wait()
        return _send(api.url, api.key_a, "race")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(thread_sender, range(50)))
    for p in procs:
        p.join(timeout=60)
    results += [queue.get(timeout=10) for _ in procs]

    statuses = [status for status, _ in results]
    assert set(statuses) <= {201, 409}, statuses
    assert len({body for status, body in results if status == 201}) == 1  # the same bytes
    assert _psp_intents(psp_sandbox.url, api.psp_key) == 1
    assert _payments(pg_engine) == 1


def test_a_dead_redis_fails_closed_with_503_and_reads_still_work(
    api: ApiUnderTest, psp_sandbox: SandboxServer, any_engine: Engine
) -> None:
    created = api.post(
        "/v1/payments", {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa"}
    ).json()
    dead = connect_redis("unix:///nonexistent/redis.sock")  # our client policy: fails fast
    settings = Settings(database_url=any_engine.url.render_as_string(hide_password=False))
    psp = PSPClient(api.psp_key, psp_sandbox.url)
    runtime = build_runtime(settings, psp=psp, redis_client=dead)
    with BackgroundServer(create_app(runtime)) as server:
        status, _body = _send(server.url, api.key_a, "while-redis-is-down")
        response = httpx.post(
            f"{server.url}/v1/payments", content=BODY,
            headers={"Authorization": f"Bearer {api.key_a}", "Idempotency-Key": "x"},
            timeout=60,
        )  # fmt: skip
        read = httpx.get(
            f"{server.url}/v1/payments/{created['id']}",
            headers={"Authorization": f"Bearer {api.key_a}"},
            timeout=60,
        )
    assert status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["code"] == "idempotency_unavailable"
    assert read.status_code == 200
    assert _psp_intents(psp_sandbox.url, api.psp_key) == 1  # only the payment made before


# -- crashes: a real server process, killed at each recovery point ----------------------


@contextmanager
def _server_process(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "payment_systems", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None and proc.returncode not in (None,):
                    break
                assert time.monotonic() < deadline, "the API server did not start"
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("point", ["payment_created", "psp_called", "recorded"])
def test_a_worker_killed_at_any_recovery_point_is_completed_by_the_retry_with_one_charge(
    point: str, pg_engine: Engine, redis_url: str, psp_sandbox: SandboxServer, psp_key: str
) -> None:
    upgrade(pg_engine)
    # a clean Redis: earlier tests' velocity windows for the same test card must not
    # turn this payment into a fraud review (the session's Redis is shared)
    redis.Redis.from_url(redis_url).flushdb()
    with unit_of_work(session_factory(pg_engine)) as session:
        _merchant, api_key = create_merchant(session, "Crashy")
    env = {
        "DATABASE_URL": pg_engine.url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
        "PSP_API_BASE": psp_sandbox.url,
        "PSP_API_KEY": psp_key,
        "IDEMPOTENCY_LOCK_TTL_S": "1",
    }
    with (
        _server_process({**env, "PAYMENT_SYSTEMS_CRASH_AT": point}) as url,
        pytest.raises(httpx.HTTPError),
    ):
        _send(url, api_key, "crash-key")  # the worker dies mid-request
    time.sleep(1.2)  # the dead worker's lock expires
    with _server_process(env) as url:
        status, _body = _send(url, api_key, "crash-key")
    assert status == 201
    assert _psp_intents(psp_sandbox.url, psp_key) == 1
    assert _payments(pg_engine) == 1
    with session_factory(pg_engine)() as session:
        balances = account_balances(session)
        fee = session.scalar(sa.select(Payment.fee_minor))
    assert sum(balances.values()) == 0
    assert balances[("merchant_payable", "USD")] == -(4200 - fee)  # the merchant pays the fee


def test_an_expired_lock_under_a_slow_psp_still_charges_once(
    api: ApiUnderTest, psp_sandbox: SandboxServer, redis_client: redis.Redis, any_engine: Engine
) -> None:
    from payment_systems.core.idempotency import RedisIdempotency

    api.runtime.idempotency = RedisIdempotency(redis_client, lock_ttl_s=0.3)  # shorter than the PSP
    _fault(psp_sandbox.url, api.psp_key, kind="latency", ms=1000, duration_s=30)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(_send, api.url, api.key_a, "slow")
        time.sleep(0.5)  # the first request's lock has expired; it is still at the PSP
        second = pool.submit(_send, api.url, api.key_a, "slow")
        results = [first.result(), second.result()]
    # The late request may lose the race to record (409 payment_busy: retryable, nothing
    # stored); what matters is one charge, one payment, and a retry that sees it done.
    assert {status for status, _ in results} <= {201, 409}
    assert 201 in {status for status, _ in results}
    assert _psp_intents(psp_sandbox.url, api.psp_key) == 1
    assert _payments(any_engine) == 1
    time.sleep(0.4)
    status, body = _send(api.url, api.key_a, "slow")
    assert status == 201
    assert b'"status":"succeeded"' in body

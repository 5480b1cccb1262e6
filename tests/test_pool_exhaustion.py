"""A saturated database pool: a fast 503 that changes nothing, then recovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from payment_systems.api.app import create_app
from payment_systems.api.runtime import Runtime, build_runtime
from payment_systems.config import Settings
from payment_systems.core.merchants import create_merchant
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import unit_of_work
from payment_systems.infra.http import BackgroundServer
from payment_systems.integrations.psp_sandbox import SandboxServer
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.patterns.circuit_breaker import CircuitBreaker


@pytest.fixture
def tiny_pool(
    tmp_path: Path, redis_client: redis.Redis, psp_sandbox: SandboxServer, psp_key: str
) -> Iterator[tuple[str, str, Runtime]]:
    url = f"sqlite:///{tmp_path / 'payments.db'}"
    upgrade(url)
    settings = Settings(database_url=url, db_pool_size=1, db_pool_timeout_s=0.5, fraud_rules=False)
    psp = PSPClient(psp_key, psp_sandbox.url, breaker=CircuitBreaker(f"p-{uuid.uuid4()}"))
    runtime = build_runtime(settings, psp=psp, redis_client=redis_client)
    with unit_of_work(runtime.sessions) as session:
        _merchant, api_key = create_merchant(session, "Pool Shop")
    runtime.merchant_for(api_key)  # warm the key cache: auth needs no connection
    with BackgroundServer(create_app(runtime)) as server:
        yield server.url, api_key, runtime


def _pay(url: str, api_key: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/payments",
        json={"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"},
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
        timeout=30,
    )


def test_an_exhausted_pool_answers_503_within_the_pool_timeout_and_recovers(
    tiny_pool: tuple[str, str, Runtime],
) -> None:
    url, api_key, runtime = tiny_pool
    hog = runtime.sessions()
    hog.execute(sa.text("SELECT 1"))  # holds the only connection
    started = time.monotonic()
    busy = _pay(url, api_key, "during")
    waited = time.monotonic() - started
    hog.close()  # the connection goes back to the pool
    assert busy.status_code == 503
    assert busy.json()["code"] == "database_busy"
    assert busy.headers["Retry-After"] == "1"
    assert waited < 5  # failed fast, not SQLAlchemy's default 30 s
    retried = _pay(url, api_key, "during")  # same key, after recovery
    assert retried.status_code == 201
    with runtime.sessions() as session:
        assert session.scalar(sa.text("SELECT count(*) FROM payments")) == 1


def test_readiness_reports_the_exhausted_database_and_recovers(
    tiny_pool: tuple[str, str, Runtime],
) -> None:
    url, _api_key, runtime = tiny_pool
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    hog = runtime.sessions()
    hog.execute(sa.text("SELECT 1"))
    degraded = httpx.get(f"{url}/readyz", timeout=10)
    hog.close()
    assert degraded.status_code == 503
    assert degraded.json()["database"] == "down: TimeoutError"
    assert degraded.json()["redis"] == "ok"
    assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"

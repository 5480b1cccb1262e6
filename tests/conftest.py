"""Shared fixtures: real services, started here when the environment has none.

A test that needs Redis or Postgres never skips for want of a server: if
``REDIS_URL`` / ``TEST_DATABASE_URL`` (a PostgreSQL one) is unset, the embedded
server is started once per test session and stopped at the end of it.

The tests drop the ``public`` schema of the PostgreSQL database they are given,
so they read ``TEST_DATABASE_URL``, never ``DATABASE_URL``: that variable names
the application's database, and a developer who exported it to try the API
must not lose it by running the suite (finding 17).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import stripe
from sqlalchemy.engine import Engine, make_url

from payment_systems.api.runtime import Runtime
from payment_systems.config import Settings
from payment_systems.infra import EmbeddedPostgres, EmbeddedRedis, create_engine
from payment_systems.infra.http import BackgroundServer
from payment_systems.integrations.psp_sandbox import SandboxServer, create_app
from payment_systems.integrations.psp_sandbox.delivery import RetryPolicy


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else a real embedded redis-server for this session."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a flushed database: each test starts from an empty Redis."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


TEST_DATABASE_ENV = "TEST_DATABASE_URL"


def _same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same PostgreSQL database (driver and password aside)."""

    def where(url: str) -> tuple[object, ...]:
        u = make_url(url)
        return (u.host or u.query.get("host"), u.port or 5432, u.database)

    try:
        return where(a) == where(b)
    except Exception:  # an unparsable DATABASE_URL is not our database
        return False


def external_test_database(environ: Mapping[str, str] = os.environ) -> str | None:
    """The external PostgreSQL the tests may wipe (``TEST_DATABASE_URL``), or None.

    Only this explicit variable opts a server in; ``DATABASE_URL`` is never read
    here. Naming the application's database in both is refused outright.
    """
    url = environ.get(TEST_DATABASE_ENV, "")
    if not url:
        return None
    if not url.startswith(("postgres://", "postgresql")):
        raise pytest.UsageError(f"{TEST_DATABASE_ENV} must be a PostgreSQL URL, not {url!r}")
    if _same_database(url, environ.get("DATABASE_URL", "")):
        raise pytest.UsageError(
            f"{TEST_DATABASE_ENV} names the same database as DATABASE_URL; the tests drop "
            "its public schema, so point it at a database of its own"
        )
    return url


def fresh_pg_engine(
    server: EmbeddedPostgres | None, environ: Mapping[str, str] = os.environ
) -> Engine:
    """An engine on an empty database: a new one on ``server``, or the reset test database."""
    if server is not None:
        return create_engine(server.create_database())
    url = external_test_database(environ)
    assert url is not None, "no embedded server and no TEST_DATABASE_URL"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    return engine


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres | None]:
    """The embedded PostgreSQL, or None when ``TEST_DATABASE_URL`` names a server to use."""
    if external_test_database() is not None:
        yield None
        return
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def pg_engine(postgres_server: EmbeddedPostgres | None) -> Iterator[Engine]:
    """A real PostgreSQL engine on a brand-new, empty database."""
    engine = fresh_pg_engine(postgres_server)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite engine on a fresh file (a file, not :memory:, so threads share it)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'test.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    """The same test, once on SQLite and once on PostgreSQL."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    engine: Engine = request.getfixturevalue(name)
    return engine


# -- the PSP sandbox -------------------------------------------------------------


@pytest.fixture(scope="session")
def psp_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A real HTTP server running the Stripe-compatible sandbox, for the whole session.

    Tests isolate themselves by using a fresh API key (a fresh account) each.
    Webhook retries are fast here (50 ms base) so retry tests take milliseconds.
    """
    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    app = create_app(f"sqlite:///{db}", retry_policy=RetryPolicy(base_s=0.05, cap_s=0.5))
    with SandboxServer(app) as server:
        yield server


@pytest.fixture
def psp_key() -> str:
    """A fresh secret key: a brand-new, empty sandbox account."""
    return "sk_test_" + uuid.uuid4().hex


@pytest.fixture
def stripe_client(psp_sandbox: SandboxServer, psp_key: str) -> stripe.StripeClient:
    """The official SDK pointed at the sandbox, with its own retries off."""
    return stripe.StripeClient(
        psp_key, base_addresses={"api": psp_sandbox.url}, max_network_retries=0
    )


# -- the Payments API ------------------------------------------------------------


@dataclass
class ApiUnderTest:
    """A running API with two merchants, over real HTTP."""

    url: str
    key_a: str
    key_b: str
    runtime: Runtime
    psp_key: str

    def post(self, path: str, body: object, *, key: str | None = "k1", api_key: str | None = None,
             raw: bytes | None = None) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key or self.key_a}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        content = raw if raw is not None else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        return httpx.post(f"{self.url}{path}", content=content, headers=headers, timeout=30)

    def get(self, path: str, api_key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {api_key or self.key_a}"}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)


@contextmanager
def _api_on(
    engine: Engine,
    redis_client: redis.Redis,
    psp_sandbox: SandboxServer,
    psp_key: str,
    **settings: Any,
) -> Iterator[ApiUnderTest]:
    """The API on ``engine``; ``settings`` override `Settings` fields (e.g. a lock timeout)."""
    from payment_systems.api.app import create_app
    from payment_systems.api.runtime import build_runtime
    from payment_systems.core.merchants import create_merchant
    from payment_systems.database.migrate import upgrade
    from payment_systems.database.session import session_factory, unit_of_work
    from payment_systems.integrations.stripe_client import PSPClient, RetryPolicy
    from payment_systems.patterns.circuit_breaker import CircuitBreaker

    upgrade(engine)
    with unit_of_work(session_factory(engine)) as session:
        _a, key_a = create_merchant(session, "Merchant A")
        _b, key_b = create_merchant(session, "Merchant B")
    psp = PSPClient(
        psp_key, psp_sandbox.url, retry=RetryPolicy(max_attempts=3, base_s=0.02, cap_s=0.05),
        breaker=CircuitBreaker(f"api-{uuid.uuid4()}"),
    )  # fmt: skip
    url = engine.url.render_as_string(hide_password=False)
    runtime = build_runtime(
        Settings(database_url=url, **settings), psp=psp, redis_client=redis_client
    )
    with BackgroundServer(create_app(runtime)) as server:
        yield ApiUnderTest(server.url, key_a, key_b, runtime, psp_key)
    runtime.engine.dispose()  # its pooled connections, before the database goes away


@pytest.fixture
def api(
    any_engine: Engine, redis_client: redis.Redis, psp_sandbox: SandboxServer, psp_key: str
) -> Iterator[ApiUnderTest]:
    """The Payments API on a fresh database (SQLite and Postgres), real Redis, the sandbox."""
    with _api_on(any_engine, redis_client, psp_sandbox, psp_key) as running:
        yield running


@pytest.fixture
def pg_api(
    pg_engine: Engine, redis_client: redis.Redis, psp_sandbox: SandboxServer, psp_key: str
) -> Iterator[ApiUnderTest]:
    """The Payments API on a fresh PostgreSQL database."""
    with _api_on(pg_engine, redis_client, psp_sandbox, psp_key) as running:
        yield running

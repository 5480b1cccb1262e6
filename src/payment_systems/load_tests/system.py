"""The full system as separate processes on this machine, for load tests and chaos.

In-process stacks (`payment_systems.api.local`) share one interpreter lock
with the load generator, which measures the GIL, not the system. Here each
part gets its own process, as in production: ``payment-systems serve`` with
N uvicorn workers, the PSP sandbox, an embedded redis-server, and SQLite or
an embedded PostgreSQL. Everything is started fresh and removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from payment_systems.api.psp_webhooks import register_webhook_endpoint, webhook_url
from payment_systems.chaos.proxy import FaultProxy
from payment_systems.core.merchants import create_merchant
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra import EmbeddedRedis, create_engine
from payment_systems.infra.processes import stop, wait_until_healthy
from payment_systems.integrations.psp_sandbox.server import free_port, run_sandbox_process
from payment_systems.integrations.stripe_client import PSPClient


@dataclass(frozen=True)
class RunningSystem:
    """Where the parts are, and the keys to use them."""

    url: str
    api_key: str
    psp_url: str
    psp_key: str
    redis_url: str
    database_url: str
    api_pid: int
    sandbox_pid: int
    redis_pid: int
    redis_server: EmbeddedRedis | None = None  # chaos: kill() and start() it
    psp_proxy: FaultProxy | None = None  # chaos: between the API and the PSP, when asked for
    redis_proxy: FaultProxy | None = None  # chaos: between the API and Redis, when asked for


def _database(stack: ExitStack, kind: str, tmp: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'payments.db'}"
    if kind == "postgres":
        from payment_systems.infra.postgres import EmbeddedPostgres

        server = stack.enter_context(EmbeddedPostgres(tmp / "pg"))
        return server.create_database("payments")
    raise ValueError(f"database must be sqlite or postgres, not {kind!r}")


@contextmanager
def running_system(
    database: str = "sqlite",
    workers: int = 2,
    *,
    psp_proxy: bool = False,
    redis_proxy: bool = False,
    env: dict[str, str] | None = None,
    **more_env: str,
) -> Iterator[RunningSystem]:
    """Start the system; ``env`` and keywords add settings (``IDEMPOTENCY_LAYER="off"``).

    ``psp_proxy`` / ``redis_proxy`` route the API's traffic to the PSP / Redis
    through a `FaultProxy`, so a chaos run can cut it. The sandbox's own
    webhooks and our control calls go direct, as a partition seldom cuts
    every path at once.
    """
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="payment-systems-") as raw:
        tmp = Path(raw)
        redis_server = stack.enter_context(EmbeddedRedis())
        clients = stack.enter_context(ExitStack())  # stopped before the API: see below
        psp_url, sandbox_pid = clients.enter_context(run_sandbox_process())
        database_url = _database(stack, database, tmp)
        engine = create_engine(database_url)
        upgrade(engine)
        with unit_of_work(session_factory(engine)) as session:
            _merchant, api_key = create_merchant(session, "Load Test Shop")
        engine.dispose()
        port, psp_key = free_port(), "sk_test_" + secrets.token_hex(12)
        # the PSP's webhooks come back to the API, as in production
        _endpoint, webhook_secret = register_webhook_endpoint(
            PSPClient(psp_key, psp_url), webhook_url("127.0.0.1", port)
        )
        to_psp = stack.enter_context(FaultProxy(psp_url.split("//", 1)[1])) if psp_proxy else None
        to_redis = (
            stack.enter_context(FaultProxy(redis_server.socket_path)) if redis_proxy else None
        )
        settings = {
            "PSP_WEBHOOK_SECRETS": webhook_secret,
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://{to_redis.address}/0" if to_redis else redis_server.url,
            "PSP_API_BASE": f"http://{to_psp.address}" if to_psp else psp_url,
            "PSP_API_KEY": psp_key,
            "FRAUD_RULES": "off",  # one test card, thousands of times, from one IP
            **(env or {}),
            **more_env,
        }
        log = tmp / "api.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "payment_systems", "serve", "--port", str(port),
                 "--workers", str(workers)],
                env={**os.environ, **settings}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_healthy(url, process, log, what="the API")
                yield RunningSystem(
                    url, api_key, psp_url, psp_key, redis_server.url, database_url,
                    process.pid, sandbox_pid, redis_server.pid, redis_server, to_psp, to_redis,
                )  # fmt: skip
            finally:
                # Clients before servers: the sandbox's webhook sender keeps keep-alive
                # connections to the API, and a draining worker lets an idle one run out
                # its keep-alive rather than close it under a request (api/graceful.py).
                clients.close()
                stop(process, timeout_s=20)

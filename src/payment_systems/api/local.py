"""The whole system in one process, on throwaway state: for docs, demos and tests.

``with local_stack() as stack:`` gives a running Payments API (real HTTP), a
merchant API key, an embedded Redis, a SQLite file and the PSP sandbox, all
gone when the block ends.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from payment_systems.api.app import create_app
from payment_systems.api.psp_webhooks import WEBHOOK_PATH, register_webhook_endpoint
from payment_systems.api.runtime import Runtime, build_runtime
from payment_systems.config import Settings
from payment_systems.core.merchants import create_merchant
from payment_systems.database.migrate import upgrade
from payment_systems.database.session import session_factory, unit_of_work
from payment_systems.infra import EmbeddedRedis, create_engine
from payment_systems.infra.http import BackgroundServer
from payment_systems.integrations.psp_sandbox import run_sandbox
from payment_systems.integrations.stripe_client import PSPClient


@dataclass(frozen=True)
class LocalStack:
    """Addresses and keys of a running local system."""

    url: str
    api_key: str
    merchant_id: str
    sandbox_url: str
    psp_key: str
    runtime: Runtime


@contextmanager
def local_stack(
    merchant_name: str = "Demo Shop", *, fraud_rules: bool = True
) -> Iterator[LocalStack]:
    """Start everything; stop and delete everything when the block ends.

    ``fraud_rules=False`` is for simulations that reuse one test card many
    times, which the velocity rules would rightly block.
    """
    with (
        tempfile.TemporaryDirectory(prefix="payment-systems-") as tmp,
        run_sandbox() as sandbox,
        EmbeddedRedis() as redis_server,
    ):
        database_url = f"sqlite:///{Path(tmp) / 'payments.db'}"
        engine = create_engine(database_url)
        upgrade(engine)
        with unit_of_work(session_factory(engine)) as session:
            merchant, api_key = create_merchant(session, merchant_name)
        psp_key = "sk_test_" + secrets.token_hex(12)
        runtime = build_runtime(
            Settings(database_url=database_url, fraud_rules=fraud_rules),
            psp=PSPClient(psp_key, sandbox.url),
            redis_client=redis_server.client(),
        )
        server = BackgroundServer(create_app(runtime))  # binds its port now: we know the URL
        _endpoint, secret = register_webhook_endpoint(
            runtime.service.psp, f"{server.url}{WEBHOOK_PATH}"
        )
        runtime.webhooks.secrets = [secret]
        with server:
            yield LocalStack(server.url, api_key, merchant.id, sandbox.url, psp_key, runtime)
        engine.dispose()

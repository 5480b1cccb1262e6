"""``payment-systems serve``: the API with whatever it needs started beside it.

With nothing configured, a fresh machine still gets a working system: an
embedded Redis (shared by all workers, so they share one lock space), the
SQLite database migrated to head, and the PSP sandbox if nothing answers at
``PSP_API_BASE``. Anything configured is used as is.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import httpx
import uvicorn
from rich.console import Console

from payment_systems.config import Settings
from payment_systems.database.migrate import upgrade
from payment_systems.infra.redis import EmbeddedRedis
from payment_systems.integrations.psp_sandbox.server import run_sandbox_process
from payment_systems.integrations.stripe_client import DEFAULT_API_BASE


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def serve(host: str, port: int, workers: int, console: Console | None = None) -> None:
    """Start dependencies as needed, migrate, and run uvicorn with ``workers`` processes."""
    out = console or Console(stderr=True)
    settings = Settings.from_env()
    with ExitStack() as stack:
        if not settings.redis_url:
            redis_server = stack.enter_context(EmbeddedRedis())
            os.environ["REDIS_URL"] = redis_server.url
            out.print(f"redis: embedded redis-server at {redis_server.url}")
        base = os.environ.get("PSP_API_BASE") or DEFAULT_API_BASE
        if not _answers(base):
            if os.environ.get("PSP_API_BASE"):
                raise SystemExit(
                    f"PSP_API_BASE={base} does not answer; start it, or unset PSP_API_BASE "
                    "to let `serve` start the sandbox itself"
                )
            sandbox_url, _pid = stack.enter_context(
                run_sandbox_process(int(base.rsplit(":", 1)[1]))
            )
            os.environ["PSP_API_BASE"] = sandbox_url
            out.print(f"psp: started the PSP sandbox at {sandbox_url}")
        upgrade(settings.database_url)
        out.print(f"database: {settings.database_url} (migrated to head)")
        if settings.worker_max_rss_growth_mb and workers < 2:
            out.print(
                "[yellow]WORKER_MAX_RSS_GROWTH_MB needs --workers 2 or more: a single worker "
                "that recycles itself is an outage, not a recycle[/yellow]"
            )
        out.print(f"Payments API on [bold]http://{host}:{port}[/bold] with {workers} worker(s)")
        uvicorn.run(
            "payment_systems.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )

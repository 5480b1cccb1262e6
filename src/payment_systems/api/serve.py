"""``payment-systems serve``: the API with whatever it needs started beside it.

With nothing configured, a fresh machine still gets a working system: an
embedded Redis (shared by all workers, so they share one lock space), the
SQLite database migrated to head, and the PSP sandbox if nothing answers at
``PSP_API_BASE``. Anything configured is used as is.

A sandbox that ``serve`` started itself is also told where our webhook route
is, and its signing secret goes to the workers (``PSP_WEBHOOK_SECRETS``), so
a newcomer's system receives and verifies webhooks from the first payment
instead of refusing every one for want of a secret. A PSP that was already
running, or secrets already set, are somebody's configuration: left alone.

Workers drain gracefully (`payment_systems.api.graceful`): a worker that is
recycled or stopped ends its keep-alive connections only in ways a client
handles, so no request is lost to a recycle.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType

import httpx
import uvicorn
from rich.console import Console

from payment_systems.api.graceful import graceful_options
from payment_systems.api.psp_webhooks import register_webhook_endpoint, webhook_url
from payment_systems.config import Settings
from payment_systems.database.migrate import upgrade
from payment_systems.infra.redis import EmbeddedRedis
from payment_systems.integrations.psp_sandbox.server import run_sandbox_process
from payment_systems.integrations.stripe_client import DEFAULT_API_BASE, PSPClient


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _subscribe_webhooks(host: str, port: int, out: Console) -> None:
    """Register our webhook route with the sandbox just started; the secret goes to workers."""
    url = webhook_url(host, port)
    endpoint_id, secret = register_webhook_endpoint(PSPClient.from_env(), url)
    os.environ["PSP_WEBHOOK_SECRETS"] = secret  # read by each worker's Settings.from_env
    out.print(f"webhooks: registered {url} with the sandbox ({endpoint_id}); its secret is set")


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While serving, SIGTERM raises `SystemExit`, so what `serve` started is stopped.

    uvicorn drains on SIGTERM, then raises the signal again for the handler it
    found. With Python's default one the process dies on the spot, before any
    ``finally``: the sandbox started here lived on as an orphan after every
    ``docker stop`` or ``kill``. Further SIGTERMs are ignored while that cleanup runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def unwind(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(0)  # a requested stop, completed cleanly

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    host: str,
    port: int,
    workers: int,
    console: Console | None = None,
    *,
    sandbox_port: int | None = None,
) -> None:
    """Start dependencies as needed, migrate, and run uvicorn with ``workers`` processes.

    ``sandbox_port`` moves the default PSP address (``127.0.0.1:12111``, where
    a sandbox is started if nothing answers) when ``PSP_API_BASE`` is unset.
    """
    out = console or Console(stderr=True)
    settings = Settings.from_env()
    with ExitStack() as stack:
        stack.enter_context(_sigterm_unwinds())
        if not settings.redis_url:
            redis_server = stack.enter_context(EmbeddedRedis())
            os.environ["REDIS_URL"] = redis_server.url
            out.print(f"redis: embedded redis-server at {redis_server.url}")
        default = DEFAULT_API_BASE if sandbox_port is None else f"http://127.0.0.1:{sandbox_port}"
        base = os.environ.get("PSP_API_BASE") or default
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
            if not settings.webhook_secrets:
                _subscribe_webhooks(host, port, out)
        elif not settings.webhook_secrets:
            out.print(
                f"[yellow]webhooks: PSP_WEBHOOK_SECRETS is unset, so deliveries from {base} "
                "will be refused; register this API's /v1/webhooks/psp with it and set the "
                "secret it returns[/yellow]"
            )
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
            **graceful_options(),
        )

"""Run the sandbox: in the foreground (the CLI) or in a background thread (tests, demos).

The thread runs a real uvicorn server on a real socket, so the official
``stripe`` SDK talks to it over HTTP exactly as it talks to Stripe.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from payment_systems.infra.http import BackgroundServer
from payment_systems.infra.processes import stop, wait_until_healthy

SandboxServer = BackgroundServer  # the sandbox is one ASGI app among others


@contextmanager
def run_sandbox(port: int = 0, **options: Any) -> Iterator[SandboxServer]:
    """A sandbox on a throwaway SQLite file, serving until the block ends.

    ``options`` go to `Sandbox` (faults, retry policy, clock...). This is what
    the docs, the demo and many tests use.
    """
    from payment_systems.integrations.psp_sandbox.app import create_app

    with tempfile.TemporaryDirectory(prefix="psp-sandbox-") as tmp:
        app = create_app(f"sqlite:///{Path(tmp) / 'sandbox.db'}", **options)
        with SandboxServer(app, port=port) as server:
            yield server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def run_sandbox_process(port: int | None = None) -> Iterator[tuple[str, int]]:
    """``payment-systems sandbox`` as a separate process: yields (base URL, pid).

    Benchmarks and load tests use this so the sandbox's CPU is its own and it
    does not share an interpreter lock with the client.
    """
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="psp-sandbox-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'sandbox.db'}"
        log_path = Path(tmp) / "sandbox.log"
        command = [sys.executable, "-m", "payment_systems", "sandbox", "--port", str(port)]
        with log_path.open("wb") as log:
            process = subprocess.Popen([*command, "--db", db], stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_healthy(url, process, log_path, what="the sandbox process", timeout_s=20)
                yield url, process.pid
            finally:
                stop(process)

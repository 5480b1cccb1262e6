"""Run the sandbox: in the foreground (the CLI) or in a background thread (tests, demos).

The thread runs a real uvicorn server on a real socket, so the official
``stripe`` SDK talks to it over HTTP exactly as it talks to Stripe.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette


class SandboxServer:
    """A uvicorn server for ``app`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to give the SDK as its ``api`` base address."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the PSP sandbox did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down and wait for it."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


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
    import httpx

    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="psp-sandbox-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'sandbox.db'}"
        log_path = Path(tmp) / "sandbox.log"
        command = [sys.executable, "-m", "payment_systems", "sandbox", "--port", str(port)]
        with log_path.open("wb") as log:
            process = subprocess.Popen([*command, "--db", db], stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        if process.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(
                                f"the sandbox process did not start:\n{log_path.read_text()}"
                            ) from None
                    time.sleep(0.05)
                yield url, process.pid
            finally:
                process.terminate()
                process.wait(timeout=10)

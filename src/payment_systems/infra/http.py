"""Run any ASGI app on a real socket in a background thread (tests, demos, the trace).

A real uvicorn server on a real port: clients talk HTTP to it exactly as
they would to a deployed service, which is what the integration tests need.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class BackgroundServer:
    """A uvicorn server for any ASGI ``app`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
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

    def start(self) -> BackgroundServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down and wait for it."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

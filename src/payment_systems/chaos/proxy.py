"""A TCP proxy we control, to put a network partition between two of our services.

Point a client at the proxy instead of the server (``REDIS_URL``,
``PSP_API_BASE``) and switch its mode while traffic flows:

* ``pass``: bytes flow both ways, untouched;
* ``blackhole``: new and existing connections stay open but nothing gets
  through, the partition a client notices only by its timeouts (the
  worst kind). Bytes already accepted are held, and delivered if the
  partition heals while the connection lives, as TCP retransmission would:
  a request the client gave up on may still reach the server later;
* ``reset``: existing connections are closed and new ones are closed at
  once, the partition a client notices immediately.

It is the smallest honest stand-in for Toxiproxy or ``tc netem``, which is
what to use in production chaos tests: those need root or a daemon, and this
needs neither. The upstream may be TCP (``host:port``) or a unix socket path
(the embedded Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

Mode = Literal["pass", "blackhole", "reset"]


class FaultProxy:
    """A proxy on 127.0.0.1, run on its own event loop thread; a context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode: Mode = "pass"
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: Mode) -> None:
        """Switch the partition on or off; ``reset`` also drops live connections."""
        self.mode = mode
        if mode == "reset":
            asyncio.run_coroutine_threadsafe(self._drop_all(), self._loop).result(timeout=5)

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.upstream.startswith("/"):
            return await asyncio.open_unix_connection(self.upstream)
        host, _, port = self.upstream.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)  # hold the bytes: silence, not an error
                if self.mode == "reset":
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            client_w.close()
            return
        try:
            upstream_r, upstream_w = await self._open_upstream()
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, upstream_w))
        try:
            await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))
        finally:
            self._writers.difference_update((client_w, upstream_w))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            await self._drop_all()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

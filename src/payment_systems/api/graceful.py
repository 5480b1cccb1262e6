"""Draining a worker without dropping a request on a keep-alive connection.

A worker is retired gracefully (the RSS watchdog's recycle, a deploy, a
scale-down): SIGTERM, uvicorn stops accepting new connections on it, its
siblings keep accepting on the shared listening socket, and it exits once
its connections are gone. Stock uvicorn (0.55, h11) does two things during
that drain that a client cannot handle:

* **It closes idle keep-alive connections at once.** A client may have just
  sent a request on one: the bytes are in the worker's socket buffer,
  unread, when the worker closes the socket. The client gets a
  ``ReadError`` (connection reset) or ``RemoteProtocolError`` ("server
  disconnected without sending a response") and cannot know whether its
  request was processed; httpx retries nothing, and no client may retry a
  ``POST`` on its own. The chaos memory-leak run lost a payment request
  this way (issue 13), and
  ``test_graceful_recycle_does_not_drop_a_request_on_a_keep_alive_connection``
  reproduces it.
* **It closes a connection right after the response it was serving, without
  saying so.** The response carries no ``Connection: close``, so the client
  puts the connection back in its pool and may send its next request on it
  before the close arrives: the same error, one request later.

HTTP/1.1 has no GOAWAY (HTTP/2 does); the only ways to end a connection that
a client handles are to say ``Connection: close`` on a response, or to close
it once it has been idle longer than any client would keep it. So while
draining, `DrainingH11Protocol`:

1. answers every response that has not started yet, on every connection,
   with ``Connection: close`` and closes the connection after it (the
   client reads the answer, then opens a new connection, to a sibling);
2. leaves idle connections open, to be closed by the ordinary keep-alive
   timer: a client sending on one is answered as in 1.

The keep-alive timer is safe only if it is longer than the clients' own
idle expiry: a client never sends on a connection it has held idle longer
than its expiry, so a server that waits longer never closes one under a
request. httpx and httpcore expire idle connections after 5 s; uvicorn's
default is also 5 s, a tie that races even without any recycle.
`KEEP_ALIVE_S` adds 3 s for a client whose event loop is late to read a
response or to send on the connection it just picked. (A load balancer in
front must idle out first for the same reason: its keep-alive timeout
below ``KEEP_ALIVE_S``.) A drain therefore lasts up to ``KEEP_ALIVE_S``
after a connection's last request, which is why
`payment_systems.api.watchdog.RecycleLease` holds the next recycle until
this one's replacement is serving. A whole-server stop waits the same way:
a client racing it gets its answer, not an ambiguous reset.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

KEEP_ALIVE_S = 8  # > httpx's 5 s idle expiry: the server never closes one under a request
DRAIN_TIMEOUT_S = 30  # then in-flight requests are cancelled: a stuck one must not pin a leak
CLOSE = (b"connection", b"close")

# The servers (one per worker process) that began a graceful shutdown.
_draining: weakref.WeakSet[ServerState] = weakref.WeakSet()


def is_draining(state: ServerState) -> bool:
    """True once the server owning ``state`` has begun a graceful shutdown."""
    return state in _draining


def close_when_draining(app: ASGIApp, state: ServerState) -> ASGIApp:
    """``app``, whose responses say ``Connection: close`` once the server drains."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and state in _draining:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await app(scope, receive, send_closing)

    return wrapped


class DrainingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, ending connections during a drain only in ways clients handle."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.app = cast(Any, close_when_draining(cast(ASGIApp, self.app), server_state))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))
        if is_draining(self.server_state):  # accepted just before the listener closed
            self._close_when_idle()

    def shutdown(self) -> None:
        """Called by uvicorn for each connection when the drain begins.

        Unlike uvicorn's own, it closes nothing: a response not yet started
        will say ``Connection: close`` (see `close_when_draining`); one being
        sent completes and leaves the connection idle; an idle connection is
        closed by its keep-alive timer, armed here if no request ever came.
        """
        _draining.add(self.server_state)
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.cycle is None and self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )


def graceful_options() -> dict[str, Any]:
    """The uvicorn settings behind a graceful drain (for `uvicorn.run` / `uvicorn.Config`)."""
    return {
        "http": DrainingH11Protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": DRAIN_TIMEOUT_S,
    }

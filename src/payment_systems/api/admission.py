"""Admission control: a bounded number of requests in flight, and a fast "no" beyond it.

"How does backpressure prevent collapse?" Without a bound, a server offered
more than it can do queues everything: every request waits behind all the
others, latency grows until clients time out, and the server keeps working
on requests whose clients have already given up. Throughput of *useful*
work (goodput) falls exactly when demand is highest. With a bound, the
excess is refused in microseconds with ``503`` and ``Retry-After``, the
admitted requests keep their normal latency, and goodput stays at capacity.

The bound is per worker process (``ADMISSION_LIMIT``, 0 turns it off):
requests beyond it are shed at the door, before any Redis, database or PSP
work, so a shed request has no side effects and is safe to retry with the
same idempotency key. Health and metrics endpoints are never shed: an
overloaded server must still say so.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from payment_systems.api.problems import PROBLEM_JSON, problem

SHED_BODY = bytes(
    problem(
        503, "overloaded",
        "the server is at capacity and refused this request before doing any work; "
        "retry after the Retry-After delay with the same Idempotency-Key",
    ).body
)  # fmt: skip


class AdmissionControl:
    """ASGI middleware: at most ``limit()`` requests under ``/v1/`` in flight at once."""

    def __init__(
        self,
        app: ASGIApp,
        limit: Callable[[], int],
        on_shed: Callable[[], None] = lambda: None,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.limit = limit
        self.on_shed = on_shed
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit()
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or limit <= 0:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= limit:
            self.on_shed()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", PROBLEM_JSON.encode()),
                        (b"retry-after", self.retry_after),
                        (b"content-length", str(len(SHED_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": SHED_BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

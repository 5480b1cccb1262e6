"""A real local HTTP endpoint that receives the sandbox's webhooks, for tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe


class WebhookReceiver:
    """Records every POST and verifies it with ``stripe.Webhook.construct_event``."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.events: list[dict[str, Any]] = []
        self.verified: list[stripe.Event] = []
        self.failures: list[str] = []
        self.respond: Callable[[int], int] = lambda _n: 200  # status for the n-th request
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests += 1
                    status = receiver.respond(receiver.requests)
                    if status == 200:
                        receiver._record(body, self.headers.get("Stripe-Signature", ""))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks"

    def _record(self, body: bytes, signature: str) -> None:
        self.events.append(json.loads(body))
        if self.secret is None:
            self.failures.append("no secret set")
            return
        try:
            self.verified.append(stripe.Webhook.construct_event(body, signature, self.secret))
        except stripe.SignatureVerificationError as exc:
            self.failures.append(str(exc))

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> None:
        """Block until ``predicate(events)`` holds; fail loudly otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.events)):
                    return
            time.sleep(0.02)
        raise AssertionError(
            f"webhooks not received in {timeout}s; got {[e['type'] for e in self.events]}"
        )

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()

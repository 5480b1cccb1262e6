"""The webhook endpoint refuses an oversized body before it verifies anything (finding 14).

``POST /v1/webhooks/psp`` is open to anyone until the signature is checked, and
the check needs the body. These tests prove the body is capped first: by its
Content-Length when it declares one, and while it streams when it is chunked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payment_systems.api.runtime import MAX_WEBHOOK_BYTES
from tests.conftest import ApiUnderTest

CHUNK = 16 * 1024


@pytest.fixture
def handler_calls(api: ApiUnderTest, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Bodies that reached the signature check (it still runs, so a small bad body gets 400)."""
    calls: list[bytes] = []
    real = api.runtime.webhooks.handle_stripe

    def spy(body: bytes, signature: str) -> Any:
        calls.append(body)
        return real(body, signature)

    monkeypatch.setattr(api.runtime.webhooks, "handle_stripe", spy)
    return calls


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "body_too_large"
    assert problem["limit"] == MAX_WEBHOOK_BYTES


def test_oversized_webhook_body_is_refused_with_413_before_signature_check(
    api: ApiUnderTest, handler_calls: list[bytes]
) -> None:
    url = f"{api.url}/v1/webhooks/psp"
    headers = {"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"}
    assert api.runtime.max_webhook_bytes == MAX_WEBHOOK_BYTES == 256 * 1024

    # declared: Content-Length over the cap
    declared = httpx.post(url, content=b" " * (MAX_WEBHOOK_BYTES + 1), headers=headers)
    _assert_refused(declared)

    # chunked: no Content-Length, so only counting the stream can catch it
    def chunks() -> Iterator[bytes]:
        for _ in range(2 * MAX_WEBHOOK_BYTES // CHUNK):
            yield b" " * CHUNK

    chunked = httpx.post(url, content=chunks(), headers=headers)
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    _assert_refused(chunked)
    assert handler_calls == []  # neither reached the signature check

    # a body at the cap is read and checked as usual: a bad signature is a 400
    at_cap = httpx.post(url, content=b" " * MAX_WEBHOOK_BYTES, headers=headers)
    assert at_cap.status_code == 400, at_cap.text
    assert len(handler_calls) == 1 and len(handler_calls[0]) == MAX_WEBHOOK_BYTES


def test_a_chunked_body_is_cut_off_at_the_cap_not_read_to_its_end(api: ApiUnderTest) -> None:
    """An endless chunked body: the route stops pulling chunks just past the cap."""
    from payment_systems.api.app import create_app

    app = create_app(api.runtime)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        assert pulled < 1000, "the route kept reading an endless body"
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/webhooks/psp", "raw_path": b"/v1/webhooks/psp",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [(b"stripe-signature", b"t=1,v1=00"), (b"transfer-encoding", b"chunked")],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert pulled == MAX_WEBHOOK_BYTES // CHUNK + 1

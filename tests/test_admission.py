"""Admission control: beyond the bound, refuse at once, before any side effect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from payment_systems.api.local import LocalStack, local_stack


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with local_stack(fraud_rules=False) as running:
        running.runtime.admission_limit = 1
        yield running


def _pay(stack: LocalStack, key: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/payments",
        json={"amount": 500, "currency": "usd", "payment_method": "pm_card_visa"},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key},
        timeout=30,
    )


def _slow_psp(stack: LocalStack, seconds: float) -> None:
    httpx.post(
        f"{stack.sandbox_url}/_sandbox/faults",
        json={"kind": "latency", "ms": int(seconds * 1000), "duration_s": 30},
        auth=(stack.psp_key, ""),
    ).raise_for_status()


def _psp_intents(stack: LocalStack) -> int:
    listed = httpx.get(
        f"{stack.sandbox_url}/v1/payment_intents", params={"limit": 100}, auth=(stack.psp_key, "")
    )
    return len(listed.json()["data"])


def test_a_request_beyond_the_bound_is_shed_with_503_and_retry_after_and_no_side_effect(
    stack: LocalStack,
) -> None:
    _slow_psp(stack, 1.5)
    first: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: first.append(_pay(stack, "in-flight")))
    holder.start()
    time.sleep(0.5)  # the first request is now waiting on the slow PSP
    shed = _pay(stack, "shed-me")
    holder.join()
    assert shed.status_code == 503
    assert shed.headers["Retry-After"] == "1"
    assert shed.headers["Content-Type"] == "application/problem+json"
    assert shed.json()["code"] == "overloaded"
    assert first[0].status_code == 201
    assert _psp_intents(stack) == 1  # the shed request never reached the PSP


def test_a_shed_request_retried_with_the_same_key_succeeds_once_there_is_room(
    stack: LocalStack,
) -> None:
    _slow_psp(stack, 1.0)
    holder = threading.Thread(target=lambda: _pay(stack, "in-flight"))
    holder.start()
    time.sleep(0.4)
    assert _pay(stack, "retry-me").status_code == 503
    holder.join()
    for _attempt in range(10):  # as a client should: wait Retry-After, same key
        retried = _pay(stack, "retry-me")
        if retried.status_code != 503:
            break
        time.sleep(float(retried.headers["Retry-After"]))
    assert retried.status_code == 201
    assert _psp_intents(stack) == 2  # the holder's and this one: the shed attempts made none


def test_health_and_metrics_are_never_shed(stack: LocalStack) -> None:
    _slow_psp(stack, 1.0)
    holder = threading.Thread(target=lambda: _pay(stack, "in-flight"))
    holder.start()
    time.sleep(0.4)
    health = httpx.get(f"{stack.url}/healthz", timeout=10)
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10)
    holder.join()
    assert (health.status_code, metrics.status_code) == (200, 200)
    assert "requests_shed_total" in metrics.text

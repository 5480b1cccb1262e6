"""Sandbox idempotency under concurrency, and the faults chaos tests rely on."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from payment_systems.integrations.psp_sandbox.errors import InvalidRequest
from payment_systems.integrations.psp_sandbox.faults import FaultBook
from payment_systems.integrations.psp_sandbox.forms import decode

BODY = {"amount": "1234", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}


def _post(
    url: str,
    key: str,
    path: str,
    data: dict[str, str],
    idem: str | None = None,
    timeout: float = 10,
) -> httpx.Response:
    headers = {"Idempotency-Key": idem} if idem else {}
    return httpx.post(f"{url}{path}", data=data, auth=(key, ""), headers=headers, timeout=timeout)


def _fault(url: str, key: str, **spec: object) -> httpx.Response:
    return httpx.post(f"{url}/_sandbox/faults", json=spec, auth=(key, ""))


def _intents(url: str, key: str) -> list[dict[str, object]]:
    data: list[dict[str, object]] = httpx.get(
        f"{url}/v1/payment_intents", params={"limit": 100}, auth=(key, "")
    ).json()["data"]
    return data


def test_100_concurrent_identical_requests_make_exactly_one_payment_intent(
    psp_sandbox: object, psp_key: str
) -> None:
    url = psp_sandbox.url  # type: ignore[attr-defined]
    # A slow card network (2 s once the key is claimed) keeps the first request in flight
    # while the other 99, released together by a barrier, arrive. Each thread opens its
    # connection before the barrier: building 100 HTTP clients after it took longer than
    # the window on a loaded CI machine, and the race never happened.
    _fault(url, psp_key, kind="latency", ms=2000, phase="after", duration_s=60)
    barrier = threading.Barrier(100)

    def send(_: int) -> httpx.Response:
        with httpx.Client(auth=(psp_key, ""), timeout=30) as client:
            client.get(f"{url}/healthz")  # connected and warm
            barrier.wait()
            return client.post(
                f"{url}/v1/payment_intents", data=BODY, headers={"Idempotency-Key": "same-key"}
            )

    with ThreadPoolExecutor(max_workers=100) as pool:
        responses = list(pool.map(send, range(100)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 409}
    assert statuses.count(409) > 0  # the race really happened
    bodies = {r.json()["id"] for r in responses if r.status_code == 200}
    assert len(bodies) == 1
    assert len(_intents(url, psp_key)) == 1


def test_a_5xx_before_processing_creates_nothing_and_is_not_stored(
    psp_sandbox: object, psp_key: str
) -> None:
    url = psp_sandbox.url  # type: ignore[attr-defined]
    _fault(url, psp_key, kind="error", status=503, methods="POST", duration_s=0.3)
    failed = _post(url, psp_key, "/v1/payment_intents", BODY, "k")
    assert failed.status_code == 503
    assert failed.json()["error"]["type"] == "api_error"
    assert _intents(url, psp_key) == []
    import time

    time.sleep(0.35)  # the fault clears itself
    assert _post(url, psp_key, "/v1/payment_intents", BODY, "k").status_code == 200


def test_a_5xx_after_processing_is_stored_and_replayed_like_stripe(
    psp_sandbox: object, psp_key: str
) -> None:
    url = psp_sandbox.url  # type: ignore[attr-defined]
    _fault(url, psp_key, kind="error", status=500, phase="after", methods="POST", duration_s=30)
    first = _post(url, psp_key, "/v1/payment_intents", BODY, "k")
    replay = _post(url, psp_key, "/v1/payment_intents", BODY, "k")
    assert first.status_code == replay.status_code == 500
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(_intents(url, psp_key)) == 1  # the charge happened: the outcome was only hidden


def test_a_rate_limit_fault_answers_429_with_retry_after(psp_sandbox: object, psp_key: str) -> None:
    url = psp_sandbox.url  # type: ignore[attr-defined]
    _fault(url, psp_key, kind="rate_limit", retry_after_s=2, duration_s=30)
    response = _post(url, psp_key, "/v1/payment_intents", BODY)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "rate_limit"


def test_a_timeout_after_processing_hides_a_payment_that_did_happen(
    psp_sandbox: object, psp_key: str
) -> None:
    url = psp_sandbox.url  # type: ignore[attr-defined]
    _fault(url, psp_key, kind="timeout", hold_s=1.0, phase="after", duration_s=30)
    with pytest.raises(httpx.ReadTimeout):
        _post(url, psp_key, "/v1/payment_intents", BODY, "k", timeout=0.2)
    httpx.request("DELETE", f"{url}/_sandbox/faults", auth=(psp_key, ""))
    assert len(_intents(url, psp_key)) == 1


def test_a_fault_spec_with_a_bad_field_says_which(psp_sandbox: object, psp_key: str) -> None:
    response = _fault(psp_sandbox.url, psp_key, kind="error", fraction=2)  # type: ignore[attr-defined]
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "fraction"
    unknown = _fault(psp_sandbox.url, psp_key, kind="meteor")  # type: ignore[attr-defined]
    assert "kind must be one of" in unknown.json()["error"]["message"]


def test_faults_clear_themselves_when_their_duration_ends() -> None:
    now = [1000.0]
    book = FaultBook(clock=lambda: now[0])
    book.add("acct", {"kind": "error", "duration_s": 10})
    assert len(book.active("acct", "/v1/payment_intents")) == 1
    now[0] += 10.001
    assert book.active("acct", "/v1/payment_intents") == []


def test_faults_apply_only_under_their_path_prefix() -> None:
    book = FaultBook(clock=lambda: 0.0)
    book.add("acct", {"kind": "error", "path_prefix": "/v1/refunds"})
    assert book.active("acct", "/v1/payment_intents") == []
    assert len(book.active("acct", "/v1/refunds")) == 1


def test_a_fractional_fault_fires_at_about_its_rate() -> None:
    import random

    book = FaultBook(clock=lambda: 0.0, rng=random.Random(7))
    fault = book.add("acct", {"kind": "error", "fraction": 0.25})
    fired = sum(book.fires(fault) for _ in range(10_000))
    assert 2300 < fired < 2700


def test_form_decoding_handles_nested_brackets_and_lists() -> None:
    decoded = decode(b"evidence[receipt]=r&enabled_events[0]=a&enabled_events[1]=b&metadata[k]=v")
    assert decoded == {
        "evidence": {"receipt": "r"},
        "enabled_events": ["a", "b"],
        "metadata": {"k": "v"},
    }


def test_form_decoding_rejects_a_key_that_is_both_value_and_hash() -> None:
    with pytest.raises(InvalidRequest, match="mixes a value and a hash"):
        decode(b"metadata=x&metadata[k]=v")


def test_an_overlong_idempotency_key_is_refused(psp_sandbox: object, psp_key: str) -> None:
    response = _post(psp_sandbox.url, psp_key, "/v1/payment_intents", BODY, "k" * 256)  # type: ignore[attr-defined]
    assert response.status_code == 400
    assert "255" in json.dumps(response.json())

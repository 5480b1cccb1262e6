"""Batch vs individual requests: what concurrency and connection reuse buy.

Answers the study plan's "Batch vs individual requests ROI?". Stripe has no
batch endpoint, so a "batch" of captures is concurrency over pooled
connections (`PSPClient.capture_many`). Compared with one new client (a new
TCP connection) per call, and with one pooled client called in sequence.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from payment_systems.integrations.psp_sandbox.server import run_sandbox_process
from payment_systems.integrations.stripe_client import CaptureRequest, PSPClient
from payment_systems.money import Money

TITLE = "PSP client: capturing 200 authorizations, individually or as a batch"
N = 200
NOTES = (
    "200 manual-capture authorizations are created first; then each strategy captures "
    "its own 200. The sandbox runs as a separate process on the same 2-core machine, "
    "so the batch speed-up is bounded by the sandbox's CPU, not by network latency; "
    "against a remote PSP (tens of ms per call) concurrency buys far more."
)
PLOT = {
    "x": "strategy",
    "y": ["captures per second"],
    "kind": "bar",
    "title": "Captures per second",
}


def _authorize_all(client: PSPClient, prefix: str) -> list[CaptureRequest]:
    amount = Money.of("25.00", "USD")
    out = []
    for i in range(N):
        pid = f"{prefix}-{i}"
        pi = client.authorize(
            merchant_id="m",
            payment_id=pid,
            amount=amount,
            payment_method="pm_card_visa",
            capture=False,
        )
        out.append(CaptureRequest("m", pid, pi.id))
    return out


def run() -> list[dict[str, Any]]:
    rows = []
    with run_sandbox_process() as (url, _pid):
        key = "sk_test_" + uuid.uuid4().hex
        pooled = PSPClient(key, url)
        strategies = {
            "new connection per call": lambda reqs: [
                PSPClient(key, url).capture(
                    merchant_id=r.merchant_id, payment_id=r.payment_id, intent_id=r.intent_id
                )
                for r in reqs
            ],
            "one pooled client, sequential": lambda reqs: [
                pooled.capture(
                    merchant_id=r.merchant_id, payment_id=r.payment_id, intent_id=r.intent_id
                )
                for r in reqs
            ],
            "capture_many, 4 workers": lambda reqs: pooled.capture_many(reqs, max_workers=4),
            "capture_many, 16 workers": lambda reqs: pooled.capture_many(reqs, max_workers=16),
        }
        baseline = None
        for name, strategy in strategies.items():
            requests = _authorize_all(pooled, name)
            start = time.perf_counter()
            results = strategy(requests)
            elapsed = time.perf_counter() - start
            ok = sum(1 for r in results if getattr(r, "status", None) == "succeeded")
            rate = N / elapsed
            baseline = baseline or rate
            rows.append(
                {
                    "strategy": name,
                    "captures per second": round(rate, 1),
                    "ms per capture": round(elapsed / N * 1000, 2),
                    "succeeded": ok,
                    "speed-up": f"{rate / baseline:.2f}x",
                }
            )
    return rows

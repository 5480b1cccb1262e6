"""Cost per API call: latency and CPU of one authorize through the PSP client.

Answers the study plan's "Cost per API call?". The compute cost is measured;
the PSP's own price (its fee) is the schedule the sandbox documents. The
dollar figure for compute uses one explicit input, the price of a vCPU-hour.
"""

from __future__ import annotations

import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

from payment_systems.integrations.psp_sandbox.fees import processing_fee
from payment_systems.integrations.psp_sandbox.server import run_sandbox_process
from payment_systems.integrations.stripe_client import PSPClient
from payment_systems.money import Money, Rounding

TITLE = "PSP client: cost per API call (authorize with automatic capture, $50.00)"
CALLS = 300
USD_PER_VCPU_HOUR = "0.05"  # an input, not a measurement: roughly a cloud on-demand vCPU
NOTES = (
    f"{CALLS} sequential authorize calls through PSPClient (official stripe SDK, pooled "
    "connection) to the sandbox running as a separate process. CPU is process CPU time "
    f"(user+system) per call. Compute dollars assume ${USD_PER_VCPU_HOUR} per vCPU-hour. "
    "The PSP fee is the sandbox's schedule (2.9% + 30c): compute is noise next to it."
)


def run() -> list[dict[str, Any]]:
    import psutil

    with run_sandbox_process() as (url, pid):
        server = psutil.Process(pid)
        client = PSPClient("sk_test_" + uuid.uuid4().hex, url)
        amount = Money.of("50.00", "USD")
        me = psutil.Process()
        for i in range(20):  # warm up connections and caches
            client.authorize(
                merchant_id="m", payment_id=f"w{i}", amount=amount, payment_method="pm_card_visa"
            )
        c0, s0 = me.cpu_times(), server.cpu_times()
        latencies = []
        start = time.perf_counter()
        for i in range(CALLS):
            t = time.perf_counter()
            client.authorize(
                merchant_id="m", payment_id=f"p{i}", amount=amount, payment_method="pm_card_visa"
            )
            latencies.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - start
        c1, s1 = me.cpu_times(), server.cpu_times()
    client_cpu = (c1.user + c1.system - c0.user - c0.system) / CALLS
    server_cpu = (s1.user + s1.system - s0.user - s0.system) / CALLS
    vcpu_hours_per_million = Decimal(repr(client_cpu + server_cpu)) * 1_000_000 / 3600
    per_million = Money.of(
        vcpu_hours_per_million * Decimal(USD_PER_VCPU_HOUR), "USD", rounding=Rounding.HALF_UP
    )
    fee = processing_fee(amount)
    q = statistics.quantiles(latencies, n=100)
    return [
        {"measure": "latency p50 (ms)", "value": round(q[49], 2)},
        {"measure": "latency p99 (ms)", "value": round(q[98], 2)},
        {"measure": "sequential calls per second", "value": round(CALLS / wall, 1)},
        {"measure": "client CPU per call (ms)", "value": round(client_cpu * 1000, 3)},
        {"measure": "sandbox CPU per call (ms)", "value": round(server_cpu * 1000, 3)},
        {"measure": "compute cost per 1M calls (USD)", "value": str(per_million.amount)},
        {"measure": "PSP fee per $50.00 charge (USD)", "value": str(fee.amount)},
        {"measure": "PSP fees per 1M such charges (USD)", "value": str(fee.amount * 1_000_000)},
    ]

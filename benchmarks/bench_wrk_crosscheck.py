"""Cross-check our load generator against wrk on the same endpoint.

wrk (Debian package ``wrk``) is closed-loop: each of its connections sends
the next request when the last answer arrives, so it measures the
throughput the server sustains and the latency *of the requests it sent*.
Our generator is open-loop. At wrk's own throughput the two should agree
on the rate and on the median; they may differ in the tail, which is the
point of measuring from the intended send time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from payment_systems.load_tests.measure import load
from payment_systems.load_tests.system import running_system

TITLE = "wrk vs payment-systems load on POST /v1/payments (PostgreSQL, 2 API workers)"
DURATION_S = 20
CONNECTIONS = 8

LUA = """
counter = 0
request = function()
  counter = counter + 1
  local key = string.format("wrk-%d-%d", math.random(1, 1000000000), counter)
  return wrk.format("POST", "/v1/payments", {
    ["Authorization"] = "Bearer API_KEY",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key,
  }, '{"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}')
end
"""


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk(url: str, api_key: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "payments.lua"
        script.write_text(LUA.replace("API_KEY", api_key))
        out = subprocess.run(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "--latency", "-s", str(script),
             url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    distribution = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(distribution["50"]),
        "p99": _ms(distribution["99"]),
        "non2xx": float(m.group(1)) if (m := re.search(r"Non-2xx.*?(\d+)", out)) else 0.0,
    }


def run() -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        return [{"tool": "wrk", "note": "not installed: apt-get install wrk, then re-run"}]
    with running_system("postgres", workers=2) as system:
        ours_ref = _wrk(system.url, system.api_key)
    with running_system("postgres", workers=2) as system:
        ours = load(system, round(ours_ref["rate"], 1), DURATION_S)
    return [
        {"tool": f"wrk ({CONNECTIONS} connections, closed loop)", "rate/s": ours_ref["rate"],
         "p50 ms": ours_ref["p50"], "p99 ms": ours_ref["p99"],
         "non-2xx": int(ours_ref["non2xx"])},
        {"tool": "payment-systems load (open loop, same rate)", "rate/s": ours["achieved_rate"],
         "p50 ms": ours["latency_ms"]["p50"], "p99 ms": ours["latency_ms"]["p99"],
         "non-2xx": sum(ours["errors"].values())},
    ]  # fmt: skip


NOTES = (
    f"wrk 4.1 with a Lua script giving every request a fresh Idempotency-Key, {CONNECTIONS} "
    f"connections, {DURATION_S} s; then our generator offered exactly wrk's achieved rate on a "
    "fresh system. Each tool runs on the same 2 cores as the system."
)

"""Calling the sandbox's own control endpoints (not Stripe's API) from Python.

The stripe SDK cannot reach ``/_sandbox/...``: these are the sandbox's levers
for time and for the customer's side of 3DS, used by the reconciliation
generator, benchmarks and tests. Each call raises on a non-2xx answer.
"""

from __future__ import annotations

from typing import Any

import httpx


def _post(url: str, api_key: str, data: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url, data=data, auth=(api_key, ""), timeout=60)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def advance_clock(sandbox_url: str, api_key: str, seconds: int) -> dict[str, Any]:
    """Move the account's clock: settles payouts, opens and decides disputes."""
    return _post(f"{sandbox_url}/_sandbox/clock/advance", api_key, {"seconds": seconds})


def authenticate(
    sandbox_url: str, api_key: str, intent_id: str, *, succeed: bool = True
) -> dict[str, Any]:
    """The customer completes (or fails) the 3DS challenge of ``intent_id``."""
    url = f"{sandbox_url}/_sandbox/payment_intents/{intent_id}/authenticate"
    return _post(url, api_key, {"result": "succeed" if succeed else "fail"})

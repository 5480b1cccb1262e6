"""Calling the sandbox's own control endpoints (not Stripe's API) from Python.

The stripe SDK cannot reach ``/_sandbox/...``: these are the sandbox's levers
for time, for the customer's side of 3DS and for webhook delivery, used by
the reconciliation generator, benchmarks, tests and the model checker. Each
call raises on a non-2xx answer.

The webhook levers let a test decide when each webhook arrives: after
`hold_webhooks`, events queue up instead of being sent; `held_webhooks`
lists them, oldest first; `release_webhooks` sends chosen ones in the order
given (or all, in ``fifo``/``lifo``/seeded ``random`` order, optionally
twice each); `redeliver` replays a sent event late; `resume_webhooks` lets
new events flow again. Releases and redeliveries return after the endpoint
answered, so the caller can check its state immediately. The sandbox page
of the docs runs the whole sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypedDict, cast

import httpx


class HeldWebhook(TypedDict):
    """One held event: its deliveries (one per endpoint) are released together."""

    event: str
    type: str
    object_id: str | None
    created: int
    endpoints: list[str]
    deliveries: int
    attempts: int


class SentWebhook(TypedDict):
    """One delivery attempt made by a release or a redelivery, and the endpoint's answer.

    ``status`` is None when the endpoint could not be reached. ``state`` is
    the delivery's state afterwards: ``delivered``, ``held`` (it failed while
    the account holds), ``pending`` (failed; retried with backoff) or ``failed``.
    """

    delivery: int
    event: str
    type: str
    endpoint: str
    status: int | None
    attempts: int
    state: str


class HoldState(TypedDict):
    """Whether the account holds its webhooks, and how many events are held."""

    object: str
    holding: bool
    held: int


def _post(url: str, api_key: str, data: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url, data=data, auth=(api_key, ""), timeout=60)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _get(url: str, api_key: str) -> dict[str, Any]:
    response = httpx.get(url, auth=(api_key, ""), timeout=60)
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


def hold_webhooks(sandbox_url: str, api_key: str) -> HoldState:
    """Queue the account's webhooks from now on (and any not yet sent) instead of sending them."""
    return cast(HoldState, _post(f"{sandbox_url}/_sandbox/webhooks/hold", api_key, {}))


def held_webhooks(sandbox_url: str, api_key: str) -> list[HeldWebhook]:
    """The held events, oldest first."""
    body = _get(f"{sandbox_url}/_sandbox/webhooks/held", api_key)
    return cast(list[HeldWebhook], body["data"])


def release_webhooks(
    sandbox_url: str,
    api_key: str,
    events: Sequence[str] = (),
    *,
    order: Literal["fifo", "lifo", "random"] | None = None,
    seed: int | None = None,
    duplicate: bool = False,
) -> list[SentWebhook]:
    """Send held events now and return each attempt, once every endpoint has answered.

    ``events`` are sent in the order given; without them every held event
    goes in ``order`` (``fifo`` by default; ``random`` needs ``seed``, so a
    run replays). ``duplicate`` sends each event twice in a row.
    """
    if isinstance(events, str):  # a lone id would otherwise be split into characters
        events = [events]
    data: dict[str, Any] = {"event": list(events)} if events else {}
    if order is not None:
        data["order"] = order
    if seed is not None:
        data["seed"] = seed
    if duplicate:
        data["duplicate"] = "true"
    body = _post(f"{sandbox_url}/_sandbox/webhooks/release", api_key, data)
    return cast(list[SentWebhook], body["data"])


def resume_webhooks(sandbox_url: str, api_key: str) -> HoldState:
    """Send new events again; what is already held stays held until released."""
    return cast(HoldState, _post(f"{sandbox_url}/_sandbox/webhooks/resume", api_key, {}))


def redeliver(sandbox_url: str, api_key: str, event_id: str) -> list[SentWebhook]:
    """Send ``event_id`` again now (freshly signed) to the endpoints it was queued for."""
    body = _post(f"{sandbox_url}/_sandbox/webhooks/redeliver", api_key, {"event": event_id})
    return cast(list[SentWebhook], body["data"])

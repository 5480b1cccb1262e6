"""Fault injection: make the sandbox misbehave the way real PSPs do, for a while.

Chaos tests and the resilience pages need a PSP that is slow, fails, times
out, throttles, or delivers webhooks twice, late or out of order, on demand.
Each fault is set with ``POST /_sandbox/faults`` (JSON), belongs to the
account whose key set it, and clears itself after ``duration_s``.

| kind | fields | effect |
|---|---|---|
| ``latency`` | ``ms``, ``jitter_ms``, ``distribution``, ``phase`` | adds delay (1) |
| ``error`` | ``status`` (500), ``fraction``, ``phase`` | a 5xx (2) |
| ``timeout`` | ``hold_s``, ``fraction``, ``phase`` | holds the request open (3) |
| ``rate_limit`` | ``retry_after_s``, ``fraction`` | 429 with ``Retry-After`` |
| ``webhook_duplicate`` | | every webhook is delivered twice |
| ``webhook_delay`` | ``delay_s`` | webhooks leave ``delay_s`` late |
| ``webhook_reorder`` | ``window_s`` | webhooks are held for a window, then delivered newest first |

1. ``distribution`` is fixed, uniform or exponential. With ``phase=after`` the
   delay comes once the idempotency key is claimed, like a slow card network.
2. ``phase=before`` fails without doing anything; ``phase=after`` does the work,
   then fails, and the 5xx is what the idempotency key stores, as at Stripe.
3. ``phase=after`` does the work first, then holds the answer for ``hold_s``,
   so the client cannot know the outcome.

Every fault also takes ``duration_s`` (default 60), ``path_prefix`` (default ``/v1/``)
and ``methods`` (default ``"GET,POST,DELETE"``).

The webhook *hold* (``/_sandbox/webhooks/hold`` ... ``/resume``, see
``admin.py``) is kept here too, because it is decided at the same moment as the
webhook faults: when an event is queued. It is a switch, not a fault: it
never expires and ``DELETE /_sandbox/faults`` leaves it alone, so a chaos
scenario that clears its faults cannot let a model checker's queue go.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from payment_systems.integrations.psp_sandbox.errors import InvalidRequest

KINDS = {
    "latency", "error", "timeout", "rate_limit",
    "webhook_duplicate", "webhook_delay", "webhook_reorder",
}  # fmt: skip
REQUEST_KINDS = {"latency", "error", "timeout", "rate_limit"}


@dataclass
class Fault:
    """One active fault; numbers are validated when it is created."""

    kind: str
    expires_at: float
    path_prefix: str = "/v1/"
    methods: str = "GET,POST,DELETE"
    fraction: float = 1.0
    ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: str = "fixed"
    status: int = 500
    phase: str = "before"
    hold_s: float = 30.0
    retry_after_s: int = 1
    delay_s: float = 0.0
    window_s: float = 1.0
    id: int = field(default=0)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WebhookOptions:
    """How the webhooks of events queued now leave the sandbox.

    ``hold`` wins over ``delay_s`` and ``reorder_window_s`` (a held delivery
    leaves when it is released, in the order the release asks for);
    ``duplicate`` still queues two copies, so the two features compose.
    """

    delay_s: float = 0.0
    duplicate: bool = False
    reorder_window_s: float | None = None
    hold: bool = False


def _number(spec: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number between {low} and {high}", param=name)
    return float(value)


class FaultBook:
    """The active faults of every account, with a clock and a random source to inject."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self._faults: dict[str, list[Fault]] = {}
        self._holding: set[str] = set()
        self._next_id = 1

    def add(self, account: str, spec: dict[str, Any]) -> Fault:
        """Validate ``spec`` and activate it; errors say which field is wrong."""
        kind = spec.get("kind")
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {sorted(KINDS)}", param="kind")
        duration = _number(spec, "duration_s", 60, 0.001, 86_400)
        fault = Fault(
            kind=str(kind),
            expires_at=self.clock() + duration,
            path_prefix=str(spec.get("path_prefix", "/v1/")),
            methods=str(spec.get("methods", "GET,POST,DELETE")).upper(),
            fraction=_number(spec, "fraction", 1.0, 0.0, 1.0),
            ms=_number(spec, "ms", 0, 0, 600_000),
            jitter_ms=_number(spec, "jitter_ms", 0, 0, 600_000),
            distribution=str(spec.get("distribution", "fixed")),
            status=int(_number(spec, "status", 500, 500, 599)),
            phase=str(spec.get("phase", "before")),
            hold_s=_number(spec, "hold_s", 30, 0, 600),
            retry_after_s=int(_number(spec, "retry_after_s", 1, 0, 3600)),
            delay_s=_number(spec, "delay_s", 0, 0, 86_400),
            window_s=_number(spec, "window_s", 1, 0.01, 3600),
            id=self._next_id,
        )
        if fault.distribution not in ("fixed", "uniform", "exponential"):
            raise InvalidRequest(
                "distribution must be fixed, uniform or exponential", "distribution"
            )
        if fault.phase not in ("before", "after"):
            raise InvalidRequest("phase must be before or after", param="phase")
        self._next_id += 1
        self._faults.setdefault(account, []).append(fault)
        return fault

    def active(self, account: str, path: str | None = None, method: str = "POST") -> list[Fault]:
        """Unexpired faults of ``account`` (matching ``path`` and ``method`` for request faults)."""
        now = self.clock()
        live = [f for f in self._faults.get(account, []) if f.expires_at > now]
        self._faults[account] = live
        if path is None:
            return live
        return [
            f
            for f in live
            if f.kind not in REQUEST_KINDS
            or (path.startswith(f.path_prefix) and method in f.methods.split(","))
        ]

    def clear(self, account: str) -> None:
        """Remove every fault of ``account`` at once."""
        self._faults.pop(account, None)

    def fires(self, fault: Fault) -> bool:
        """Whether a fractional fault applies to this request."""
        return fault.fraction >= 1.0 or self.rng.random() < fault.fraction

    def latency_s(self, fault: Fault) -> float:
        """A delay drawn from the fault's distribution."""
        base, jitter = fault.ms / 1000, fault.jitter_ms / 1000
        if fault.distribution == "uniform":
            return base + self.rng.uniform(0, jitter)
        if fault.distribution == "exponential":
            return base + (self.rng.expovariate(1 / jitter) if jitter else 0.0)
        return base

    def hold(self, account: str) -> None:
        """Queue this account's webhooks from now on instead of sending them."""
        self._holding.add(account)

    def resume(self, account: str) -> None:
        """Send this account's new webhooks again; what is held stays held."""
        self._holding.discard(account)

    def holding(self, account: str) -> bool:
        """Whether the account's webhooks are being held (the dispatcher asks before sending)."""
        return account in self._holding

    def webhook_options(self, account: str) -> WebhookOptions:
        """How webhooks queued now leave: the active webhook faults and the hold."""
        delay, duplicate, window = 0.0, False, None
        for f in self.active(account):
            if f.kind == "webhook_delay":
                delay = max(delay, f.delay_s)
            elif f.kind == "webhook_duplicate":
                duplicate = True
            elif f.kind == "webhook_reorder":
                window = f.window_s
        return WebhookOptions(delay, duplicate, window, hold=self.holding(account))

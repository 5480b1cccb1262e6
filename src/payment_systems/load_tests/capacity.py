"""Capacity search: the highest constant rate that still meets the latency and error goals.

Step the offered rate up geometrically; the first step that breaks a goal
(p99 above the limit, or errors above the budget) ends the search, and the
last step that held is the capacity. Each step is a full open-loop run, so
a step that falls behind shows it as latency, not as a quietly lower rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Goals:
    """What "held" means: the study plan's limits are p99 < 100 ms and < 0.1% errors."""

    p99_ms: float = 100.0
    error_rate: float = 0.001

    def met(self, report: dict[str, Any]) -> bool:
        return bool(
            report["latency_ms"]["p99"] <= self.p99_ms and report["error_rate"] <= self.error_rate
        )


def rates(start: float, factor: float = 1.5, limit: float = 10_000) -> Iterator[float]:
    """Offered rates to try: ``start``, then ``factor`` times more each step.

    Examples:
        >>> list(rates(20, 2, 200))
        [20, 40, 80, 160]
    """
    rate = start
    while rate <= limit:
        yield rate
        rate = round(rate * factor)


def find_max(
    measure: Callable[[float], dict[str, Any]], start: float, goals: Goals, factor: float = 1.5
) -> tuple[float | None, list[dict[str, Any]]]:
    """Run ``measure(rate)`` up the ladder; returns (highest rate that held, every step)."""
    held: float | None = None
    steps = []
    for rate in rates(start, factor):
        report = measure(rate)
        ok = goals.met(report)
        steps.append({**report, "held": ok})
        if not ok:
            break
        held = rate
    return held, steps

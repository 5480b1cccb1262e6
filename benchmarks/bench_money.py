"""How much does exactness cost? Money operations against the float they replace."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from benchmarks.harness import ops_per_second
from payment_systems.money import Money, Rounding

TITLE = "Money operations (single core, pure Python)"
NOTES = "Best of 5 runs. The float row is the baseline that Money replaces."


def run() -> list[dict[str, Any]]:
    a, b = Money(1999, "USD"), Money(1, "USD")
    hundred = Money.of("100.00", "USD")
    fa, fb = 19.99, 0.01
    cases = [
        ("float a + b (baseline)", lambda: fa + fb, 1_000_000),
        ("Money a + b", lambda: a + b, 200_000),
        ('Money.of("19.99", "USD")', lambda: Money.of("19.99", "USD"), 200_000),
        ("Money.allocate([1, 1, 1])", lambda: hundred.allocate([1, 1, 1]), 100_000),
        (
            "Money.multiply(0.029, HALF_UP)",
            lambda: a.multiply(Decimal("0.029"), rounding=Rounding.HALF_UP),
            100_000,
        ),
        ('Money.format("en_US")', lambda: a.format("en_US"), 20_000),
    ]
    return [{"operation": name, **ops_per_second(fn, number=n)} for name, fn, n in cases]

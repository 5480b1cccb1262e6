"""Triangular arbitrage: where a set of quotes lets money go round a loop and grow.

"Show me FX rate arbitrage opportunities." With quotes ``q[a][b]`` (units
of ``b`` for one ``a``), a loop a → b → c → a returns
``q[a][b] · q[b][c] · q[c][a]`` per unit; above 1 it is free money. Two
facts follow, and this module lets the docs compute both:

* Rates crossed through one base currency, as our converter quotes them,
  are consistent: every loop returns exactly 1 at mid, and
  ``(1 - markup)^3`` at our customer rates. A customer cannot arbitrage a
  platform that quotes all pairs from one snapshot.
* Mixing snapshots breaks that: one pair quoted from a stale cache, the
  others fresh, opens a loop whenever the rate moved by more than the
  spreads since the cache was filled. That is the real reason for a
  staleness bound on cached rates, and why 2.5% of markup leaves a wide
  margin over a 5-minute move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import permutations

Quotes = Mapping[str, Mapping[str, Decimal]]
NOISE = Decimal("1e-12")  # cross rates are 28-digit quotients; below this is rounding, not money


@dataclass(frozen=True, slots=True)
class Loop:
    """One loop through three currencies and what one unit becomes after it."""

    path: tuple[str, str, str]
    growth: Decimal  # > 1 is an opportunity

    @property
    def profit_bps(self) -> Decimal:
        return ((self.growth - 1) * 10_000).quantize(Decimal("0.01"))


def quotes_from_base(
    per_base: Mapping[str, Decimal], base: str, markup: Decimal = Decimal(0)
) -> dict[str, dict[str, Decimal]]:
    """Every pair's quote crossed through ``base``, less ``markup`` (our customer rates)."""
    table = {**per_base, base: Decimal(1)}
    return {a: {b: table[b] / table[a] * (1 - markup) for b in table if b != a} for a in table}


def loops(quotes: Quotes) -> list[Loop]:
    """Every three-currency loop, best first (each loop once, from its first currency)."""
    found = []
    for a, b, c in permutations(sorted(quotes), 3):
        if a < b and a < c:  # one rotation per loop; both directions kept
            growth = quotes[a][b] * quotes[b][c] * quotes[c][a]
            found.append(Loop((a, b, c), growth))
    return sorted(found, key=lambda loop: loop.growth, reverse=True)


def opportunities(quotes: Quotes) -> list[Loop]:
    """The loops that make money.

    Examples:
        >>> from decimal import Decimal as D
        >>> fresh = quotes_from_base({"EUR": D("0.92"), "GBP": D("0.79")}, "USD")
        >>> opportunities(fresh)
        []
        >>> stale = {**fresh, "USD": {**fresh["USD"], "EUR": D("0.93")}}  # one old quote
        >>> [(loop.path, loop.profit_bps) for loop in opportunities(stale)]
        [(('EUR', 'GBP', 'USD'), Decimal('108.70'))]
    """
    return [loop for loop in loops(quotes) if loop.growth > 1 + NOISE]

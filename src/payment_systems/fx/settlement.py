"""FX settlement risk: the exposure between locking a quote and being paid.

A customer pays EUR 100 at 10:00; we promise the merchant USD at the quoted
rate. The PSP settles the euros two days later (T+2), at whatever EUR/USD is
then. Until then we hold an **open position**: long EUR, short USD. If the
euro falls, we lose the difference; at scale, a 1% move on $10M is $100,000.

This module models the positions, simulates rate paths (a seeded geometric
Brownian motion with volatility as an input) and compares three strategies:

* **no hedge**: take whatever the market gives at settlement;
* **forward**: sell the foreign currency forward at quote time, for a small
  cost (``forward_cost_bps``): the P&L becomes known and nearly zero;
* **netting**: offset positions in the same currency first (EUR received from
  customers against EUR owed to EUR-settling merchants and refunds) and hedge
  nothing: only the net exposure moves with the market.

Losses are reported as a distribution: p50, p95, p99 and the expected
shortfall (the mean loss in the worst 1% of paths), because the average
hides exactly the days that hurt. The simulation's statistics are floats:
they are estimates of risk, never amounts that get booked (`pnl_usd`, which
prices one real position, is exact).

Herstatt risk is the other settlement risk: one leg of an FX trade paid and
the other not (Bankhaus Herstatt, 1974). Payment-versus-payment settlement,
such as CLS, removes it by paying both legs at once or neither.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from payment_systems.money import Money, Rounding


@dataclass(frozen=True, slots=True)
class Position:
    """Foreign currency we will receive (positive) or pay (negative), against a locked rate.

    ``amount`` is in the foreign currency; ``locked_rate`` is USD per unit of
    it, fixed when the quote was given.
    """

    amount: Money
    locked_rate: Decimal

    @property
    def owed_usd(self) -> Decimal:
        return self.amount.amount * self.locked_rate


def pnl_usd(position: Position, settlement_rate: Decimal) -> Money:
    """Profit (positive) or loss of one position settled at ``settlement_rate``.

    Examples:
        >>> eur = Position(Money.of("9174311.93", "EUR"), Decimal("1.0900"))  # $10M at 1.09
        >>> pnl_usd(eur, Decimal("1.0791"))  # EUR fell 1% before settlement
        Money.of('-100000.00', 'USD')
    """
    value = position.amount.amount * settlement_rate - position.owed_usd
    return Money.of(value, "USD", rounding=Rounding.HALF_EVEN)


def gbm_paths(spot: float, volatility: float, days: int, paths: int, seed: int = 1) -> list[float]:
    """Settlement rates after ``days`` for ``paths`` seeded GBM paths (annual ``volatility``)."""
    rng = random.Random(seed)
    dt = days / 365
    drift = -0.5 * volatility**2 * dt
    scale = volatility * math.sqrt(dt)
    return [spot * math.exp(drift + scale * rng.gauss(0, 1)) for _ in range(paths)]


@dataclass(frozen=True, slots=True)
class LossDistribution:
    """Loss in USD (positive = money lost) across simulated paths."""

    strategy: str
    p50: float
    p95: float
    p99: float
    expected_shortfall_99: float

    def row(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "p50 loss (USD)": round(self.p50),
            "p95 loss (USD)": round(self.p95),
            "p99 loss (USD)": round(self.p99),
            "expected shortfall 99% (USD)": round(self.expected_shortfall_99),
        }


def distribution(strategy: str, losses: Sequence[float]) -> LossDistribution:
    ordered = sorted(losses)
    q = statistics.quantiles(ordered, n=100)
    tail = ordered[int(len(ordered) * 0.99) :]
    return LossDistribution(strategy, q[49], q[94], q[98], statistics.fmean(tail))


def net_by_currency(positions: Sequence[Position]) -> dict[str, tuple[Decimal, Decimal]]:
    """Per currency: (net foreign amount, USD owed on it). Offsetting flows cancel."""
    net: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for p in positions:
        net[p.amount.currency][0] += p.amount.amount
        net[p.amount.currency][1] += p.owed_usd
    return {cur: (a, owed) for cur, (a, owed) in net.items()}


def compare_strategies(
    positions: Sequence[Position],
    spot: dict[str, float],
    volatility: float = 0.08,
    days: int = 2,
    paths: int = 10_000,
    conversion_spread_bps: float = 10.0,
    forward_cost_bps: float = 2.0,
    seed: int = 1,
) -> list[LossDistribution]:
    """Loss distributions (USD) of four ways to run the same book to settlement.

    * no hedge: every flow converted at the settlement spot, paying the bank's
      spread on each (the gross notional), and the market move on the book;
    * forward at quote time: every flow sold forward: only the forward's cost;
    * netting by currency: flows in one currency offset first; the spread is
      paid on the net only, and the market move still hits the net;
    * netting, then a forward on the net: the cost on the net, and nothing else.

    ``spot`` is USD per unit of each currency now; currencies move on
    independent seeded GBM paths (real ones correlate).
    """
    moves = {
        cur: gbm_paths(spot[cur], volatility, days, paths, seed + i)
        for i, cur in enumerate(sorted(spot))
    }
    nets = net_by_currency(positions)
    gross = sum(abs(float(p.owed_usd)) for p in positions)
    net_notional = sum(abs(float(owed)) for _, owed in nets.values())
    spread_gross = gross * conversion_spread_bps / 10_000
    spread_net = net_notional * conversion_spread_bps / 10_000
    market = [
        sum(float(owed) - float(a) * moves[cur][k] for cur, (a, owed) in nets.items())
        for k in range(paths)
    ]  # the book's move: identical whether or not flows are netted
    return [
        distribution("no hedge", [m + spread_gross for m in market]),
        distribution("forward at quote time", [gross * forward_cost_bps / 10_000] * paths),
        distribution("netting by currency", [m + spread_net for m in market]),
        distribution("netting, then forward", [net_notional * forward_cost_bps / 10_000] * paths),
    ]


def sample_book(seed: int = 7) -> tuple[list[Position], dict[str, float]]:
    """A day's book: $10M of card payments in EUR and GBP settling in USD, and the
    EUR and GBP the platform owes (refunds, merchants paid in their own currency).
    """
    rng = random.Random(seed)
    spot = {"EUR": 1.087, "GBP": 1.266}
    positions = []
    for cur, share in (("EUR", 0.6), ("GBP", 0.4)):
        rate = Decimal(str(spot[cur]))
        owed_in = Decimal(10_000_000) * Decimal(str(share))
        amount = (owed_in / rate).quantize(Decimal("0.01"))
        positions.append(Position(Money.of(amount, cur), rate))
        payable = (amount * Decimal(str(round(rng.uniform(0.3, 0.5), 2)))).quantize(Decimal("0.01"))
        positions.append(Position(Money.of(-payable, cur), rate))
    return positions, spot

"""Prevention over fighting: when to ask for 3D Secure, as a risk-score threshold.

The study plan's trade-off: 3DS cuts chargebacks by 80% (and shifts fraud
liability to the issuer) but loses 15% of the customers it challenges.
Challenge everyone and you lose 15% of your sales to stop fraud you mostly
did not have; challenge no one and you pay every fraud in full. Between the
two, a risk score orders payments from safe to suspicious, and the policy is
one number: challenge at or above ``threshold``.

Per payment of amount ``A`` with margin ``m``, chargeback fee ``F``, fraud
indicator ``y`` (1 if the payment turns out fraudulent)::

    not challenged:  m·A - y·(A + F)
    challenged:      (1 - c)·m·A - (1 - r)·y·(A + F)      (c = 15%, r = 80%)

so a payment is worth challenging when its fraud probability exceeds
``c·m·A / (r·(A + F))``: 3.125% with the study plan's $75 order, 20% margin
and $15 fee (`payment_systems.business.impact.three_ds_breakeven_fraud_rate`).
`optimal_threshold` finds the score cut-off that maximizes total profit over
a simulated population of scored payments; the payments page plots the
profit at every threshold.

The score is 0-99, like Stripe Radar's ``risk_score``; in production it comes
from Radar, Sift, Signifyd or your own model. Payments carry it in
``POST /v1/payments`` as ``risk_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from payment_systems.money import Money, Rounding

if TYPE_CHECKING:  # numpy is imported where the simulation runs, not on the payment path
    import numpy as np

MAX_SCORE = 99


@dataclass(frozen=True, slots=True)
class ThreeDSPolicy:
    """Challenge a payment whose risk score is at or above ``threshold``."""

    threshold: int

    def challenge(self, risk_score: int | None) -> bool:
        """Whether to ask for 3DS; no score means no evidence of risk, so no challenge."""
        return risk_score is not None and risk_score >= self.threshold


@dataclass(frozen=True, slots=True)
class Economics:
    """The study plan's inputs, as explicit parameters."""

    order: Money = Money(7_500, "USD")
    margin: Decimal = Decimal("0.20")
    chargeback_fee: Money = Money(1_500, "USD")
    chargeback_reduction: Decimal = Decimal("0.80")
    conversion_loss: Decimal = Decimal("0.15")

    def _minor(self, value: Decimal) -> int:
        return int(value.quantize(Decimal(1), rounding=Rounding.HALF_EVEN.value))

    def values(self) -> tuple[int, int, int, int]:
        """Minor units: (sale profit, fraud loss, sale profit if challenged, fraud loss if
        challenged)."""
        sale = Decimal(self.order.amount_minor) * self.margin
        loss = Decimal((self.order + self.chargeback_fee).amount_minor)
        return (
            self._minor(sale),
            self._minor(loss),
            self._minor(sale * (1 - self.conversion_loss)),
            self._minor(loss * (1 - self.chargeback_reduction)),
        )


@dataclass(frozen=True, slots=True)
class Population:
    """Scored payments: a score 0-99 each, and whether it turned out fraudulent."""

    scores: np.ndarray
    fraud: np.ndarray

    @classmethod
    def simulate(cls, n: int = 200_000, fraud_rate: float = 0.01, seed: int = 7) -> Population:
        """A seeded population: legitimate scores ~ Beta(2, 12), fraud ~ Beta(5, 3).

        The shapes give a realistic picture: most payments score low, fraud
        mostly scores high, and the two overlap, which is why no threshold is
        free.
        """
        import numpy as np

        rng = np.random.default_rng(seed)
        fraud = rng.random(n) < fraud_rate
        raw = np.where(fraud, rng.beta(5, 3, n), rng.beta(2, 12, n))
        scores = np.minimum((raw * 100).astype(np.int64), MAX_SCORE)
        return cls(scores, fraud)


@dataclass(frozen=True, slots=True)
class ThresholdCurve:
    """Total profit (minor units) for each threshold 0..100 (100 = never challenge)."""

    thresholds: list[int]
    profit: list[int]
    challenged_share: list[float]
    fraud_caught_share: list[float]

    @property
    def best(self) -> int:
        """The threshold with the highest profit (the lowest such, on a tie)."""
        return self.thresholds[max(range(len(self.profit)), key=self.profit.__getitem__)]

    def at(self, threshold: int) -> int:
        return self.profit[self.thresholds.index(threshold)]


def profit_curve(population: Population, economics: Economics | None = None) -> ThresholdCurve:
    """Profit at every threshold, exact in integer minor units."""
    import numpy as np

    sale, loss, sale_3ds, loss_3ds = (economics or Economics()).values()
    legit = np.bincount(population.scores[~population.fraud], minlength=MAX_SCORE + 1)
    fraud = np.bincount(population.scores[population.fraud], minlength=MAX_SCORE + 1)
    # value of each score bucket if challenged or not (every payment earns the sale margin)
    plain = (legit + fraud) * sale - fraud * loss
    challenged = (legit + fraud) * sale_3ds - fraud * loss_3ds
    thresholds = list(range(MAX_SCORE + 2))
    total = len(population.scores)
    fraud_total = max(int(fraud.sum()), 1)
    profit, share, caught = [], [], []
    for t in thresholds:
        profit.append(int(plain[:t].sum() + challenged[t:].sum()))
        share.append(float((legit[t:].sum() + fraud[t:].sum()) / total))
        caught.append(float(fraud[t:].sum() / fraud_total))
    return ThresholdCurve(thresholds, profit, share, caught)


def optimal_threshold(population: Population | None = None) -> int:
    """The profit-maximizing threshold for ``population`` (the default simulation).

    Examples:
        >>> optimal_threshold()
        38
    """
    return profit_curve(population or Population.simulate()).best

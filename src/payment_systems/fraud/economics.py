"""Where to set a fraud threshold: the one that costs least, in the study plan's terms.

"Each prevented fraud = $500 saved" and "false positive = 3% revenue loss":
a threshold too strict blocks good customers (lost sales), too loose lets
card testers through (each fraudulent charge costs the goods, the chargeback
fee and the fraud team's time, $500 in the study plan). `simulate` makes
labelled traffic (`traffic`), runs it through the real velocity rules on
Redis, and `sweep` scores every threshold of the ``cards_per_ip`` rule.

We read "3% revenue loss" as the ceiling on the share of good revenue that
false positives may cost; the recommended threshold is the cheapest one
under that ceiling.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import redis

from payment_systems.fraud.velocity import Attempt, Rule, VelocityRules
from payment_systems.money import Money, Rounding

FRAUD_COST = Money(50_000, "USD")  # $500 per fraudulent charge let through
MAX_REVENUE_LOSS = Decimal("0.03")


@dataclass(frozen=True, slots=True)
class LabelledAttempt:
    """One attempt, whether it is fraud, and when (ms)."""

    at_ms: int
    attempt: Attempt
    fraud: bool


def traffic(
    hours: int = 24,
    customers: int = 2000,
    bursts: int = 12,
    burst_size: int = 25,
    seed: int = 1,
) -> list[LabelledAttempt]:
    """Labelled traffic: customers buy (mostly one card, sometimes two or three, some sharing
    an office IP); card testers arrive in bursts of many cards from one IP within minutes.
    """
    rng = random.Random(seed)
    start = 1_800_000_000_000
    out: list[LabelledAttempt] = []
    offices = [f"203.0.113.{i}" for i in range(20)]
    for c in range(customers):
        ip = rng.choice(offices) if rng.random() < 0.3 else f"198.51.{c // 250}.{c % 250}"
        cards = rng.choices([1, 2, 3], weights=[85, 12, 3])[0]
        for purchase in range(rng.choices([1, 2, 3], weights=[70, 20, 10])[0]):
            card = f"card_{c}_{purchase % cards}"
            amount = int(rng.lognormvariate(8.3, 0.7))  # a median order around $40
            at = start + rng.randrange(hours * 3_600_000)
            out.append(LabelledAttempt(at, Attempt("m_1", card, amount, ip, f"cus_{c}"), False))
    for b in range(bursts):
        ip = f"192.0.2.{b}"
        at = start + rng.randrange(hours * 3_600_000)
        for n in range(burst_size):
            card = f"stolen_{b}_{n}"
            amount = rng.randint(100, 5_000)
            out.append(LabelledAttempt(at + n * 20_000, Attempt("m_1", card, amount, ip), True))
    return sorted(out, key=lambda a: a.at_ms)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    threshold: int
    fraud_blocked: int
    fraud_missed: int
    good_blocked: int
    revenue_lost_share: Decimal
    expected_cost: Money

    def row(self) -> dict[str, object]:
        return {
            "block at (cards per IP per hour)": self.threshold,
            "fraud blocked": self.fraud_blocked,
            "fraud missed": self.fraud_missed,
            "good customers blocked": self.good_blocked,
            "revenue lost": f"{self.revenue_lost_share:.2%}",
            "expected cost (USD)": str(self.expected_cost.amount),
        }


def simulate(
    client: redis.Redis, attempts: Iterable[LabelledAttempt]
) -> list[tuple[LabelledAttempt, int]]:
    """Each attempt with the ``cards_per_ip`` value the real Redis rule measured for it."""
    now = [0]
    rules = VelocityRules(
        client, (Rule("cards_per_ip", 3600, 10**9, 10**9, "distinct"),), clock_ms=lambda: now[0],
        prefix=f"sim{random.random()}",
    )  # fmt: skip
    measured = []
    for labelled in attempts:
        now[0] = labelled.at_ms
        values = rules.check(labelled.attempt).values or {}
        measured.append((labelled, values.get("cards_per_ip", 0)))
    return measured


def sweep(
    measured: list[tuple[LabelledAttempt, int]], thresholds: Iterable[int]
) -> list[ThresholdResult]:
    """Score each block threshold: missed fraud costs $500, a blocked sale costs the sale."""
    good_revenue = sum(a.attempt.amount_minor for a, _ in measured if not a.fraud)
    results = []
    for threshold in thresholds:
        blocked = [(a, v) for a, v in measured if v >= threshold]
        fraud_blocked = sum(1 for a, _ in blocked if a.fraud)
        fraud_total = sum(1 for a, _ in measured if a.fraud)
        good = [a for a, _ in blocked if not a.fraud]
        lost = sum(a.attempt.amount_minor for a in good)
        missed = fraud_total - fraud_blocked
        cost = FRAUD_COST.multiply(missed, rounding=Rounding.HALF_UP) + Money(lost, "USD")
        share = Decimal(lost) / Decimal(good_revenue) if good_revenue else Decimal(0)
        results.append(ThresholdResult(threshold, fraud_blocked, missed, len(good), share, cost))
    return results


def recommend(results: list[ThresholdResult]) -> ThresholdResult:
    """The cheapest threshold whose false positives cost at most 3% of good revenue."""
    allowed = [r for r in results if r.revenue_lost_share <= MAX_REVENUE_LOSS] or results
    return min(allowed, key=lambda r: (r.expected_cost.amount_minor, -r.threshold))

"""Fight or accept: one decision per dispute, from its expected value.

The study plan's rule is ``win_rate x (amount + fee) > cost_to_fight``: a
win returns the amount and the fee. That was true of the old fee model.
Under Stripe's 2025 model the dispute fee is never returned and countering
costs a second fee that only a win refunds, so the honest comparison is::

    fight if  win_rate x (amount + fees returned on a win)
              > cost_to_fight + fees charged for fighting

With the study plan's own inputs ($75, 30%, $25 to fight) the old model
says fight (+$2.00 a dispute) and the new one says accept (-$13.00): the
break-even win rate rises from 27.8% to 44.4%. `FeeModel` makes the choice
explicit instead of burying it in a constant.

The win rate for one dispute is estimated from our own history of the same
reason code and evidence strength, shrunk toward a prior (Beta-binomial):
with no history it is the prior (`STRENGTH_PRIORS`, assumptions stated as
such), with much history it is the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from payment_systems.money import Money, Rounding

PRIOR_WIN_RATE = Decimal("0.30")  # the study plan's industry-wide figure
PRIOR_WEIGHT = 10  # the prior counts as this many past disputes
# Assumed win rates by evidence strength until our own history outweighs them: strong
# evidence (the rule predicts a win) does better than the industry's 30%, weak far worse.
STRENGTH_PRIORS = {"strong": Decimal("0.60"), "weak": Decimal("0.10")}


class FeeModel(StrEnum):
    REFUNDED_ON_WIN = "refunded_on_win"  # the study plan: one fee, returned on a win
    COUNTER_FEE = "counter_fee"  # Stripe since 2025: dispute fee kept, counter fee refundable


@dataclass(frozen=True, slots=True)
class FightDecision:
    """The expected value of fighting one dispute, against accepting it."""

    win_rate: Decimal
    recoverable: Money  # what a win brings back
    cost: Money  # what fighting costs whatever the outcome
    expected_value: Money  # win_rate x recoverable - cost
    break_even_win_rate: Decimal

    @property
    def fight(self) -> bool:
        return self.expected_value.amount_minor > 0


def fight_or_accept(
    amount: Money,
    win_rate: Decimal,
    cost_to_fight: Money,
    fee: Money,
    model: FeeModel = FeeModel.COUNTER_FEE,
) -> FightDecision:
    """Whether to fight a dispute of ``amount``; ``fee`` is the network's fee.

    Examples:
        >>> usd = lambda cents: Money(cents, "USD")
        >>> old = fight_or_accept(usd(7500), Decimal("0.30"), usd(2500), usd(1500),
        ...                       FeeModel.REFUNDED_ON_WIN)
        >>> old.fight, str(old.expected_value), f"{old.break_even_win_rate:.3f}"
        (True, '2.00 USD', '0.278')
        >>> new = fight_or_accept(usd(7500), Decimal("0.30"), usd(2500), usd(1500))
        >>> new.fight, str(new.expected_value), f"{new.break_even_win_rate:.3f}"
        (False, '-13.00 USD', '0.444')
    """
    if not Decimal(0) <= win_rate <= Decimal(1):
        raise ValueError(f"win_rate must be between 0 and 1, got {win_rate}")
    recoverable = amount + fee
    cost = cost_to_fight if model is FeeModel.REFUNDED_ON_WIN else cost_to_fight + fee
    expected = recoverable.multiply(win_rate, rounding=Rounding.HALF_EVEN) - cost
    break_even = Decimal(cost.amount_minor) / Decimal(recoverable.amount_minor)
    return FightDecision(win_rate, recoverable, cost, expected, break_even)


def estimated_win_rate(
    won: int, lost: int, prior: Decimal = PRIOR_WIN_RATE, weight: int = PRIOR_WEIGHT
) -> Decimal:
    """Our win rate for similar disputes, shrunk toward ``prior``.

    Examples:
        >>> estimated_win_rate(0, 0)
        Decimal('0.30')
        >>> estimated_win_rate(45, 5)  # (45 + 3) / (50 + 10)
        Decimal('0.80')
    """
    if won < 0 or lost < 0:
        raise ValueError("won and lost are counts, never negative")
    return (Decimal(won) + prior * weight) / Decimal(won + lost + weight)

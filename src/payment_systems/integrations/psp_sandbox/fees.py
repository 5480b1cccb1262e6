"""The sandbox's fee schedule: what a charge costs the merchant.

A card processor charges a percentage of the amount plus a fixed fee per
successful charge. The sandbox uses Stripe's US list price, **2.9% + 30¢**,
with the fixed part per currency, and rounds the percentage half-up to the
minor unit, as Stripe does. Refunds return no processing fee; a dispute costs
a flat **$15.00** (the study plan's chargeback fee), returned if the merchant wins.

| currency | percent | fixed |
|---|---|---|
| USD | 2.9% | 0.30 |
| EUR | 2.9% | 0.25 |
| GBP | 2.9% | 0.20 |
| JPY | 3.6% | 0 |
| any other | 2.9% | 0.30 in major units, at the currency's ISO exponent |
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from payment_systems.money import Money, Rounding


@dataclass(frozen=True, slots=True)
class FeeRule:
    """Percentage (as a fraction) plus a fixed amount in major units."""

    percent: Decimal
    fixed_major: Decimal


SCHEDULE: dict[str, FeeRule] = {
    "USD": FeeRule(Decimal("0.029"), Decimal("0.30")),
    "EUR": FeeRule(Decimal("0.029"), Decimal("0.25")),
    "GBP": FeeRule(Decimal("0.029"), Decimal("0.20")),
    "JPY": FeeRule(Decimal("0.036"), Decimal("0")),
}
DEFAULT_RULE = FeeRule(Decimal("0.029"), Decimal("0.30"))
DISPUTE_FEE_MAJOR = Decimal("15.00")  # kept by the network whatever the outcome
COUNTER_FEE_MAJOR = Decimal("15.00")  # charged when evidence is submitted; refunded on a win


def processing_fee(amount: Money) -> Money:
    """The fee on a captured charge of ``amount``.

    Examples:
        >>> processing_fee(Money.of("100.00", "USD"))
        Money.of('3.20', 'USD')
        >>> processing_fee(Money.of("10.00", "USD"))  # 29 cents + 30 cents
        Money.of('0.59', 'USD')
        >>> processing_fee(Money(10000, "JPY"))
        Money.of('360', 'JPY')
    """
    rule = SCHEDULE.get(amount.currency, DEFAULT_RULE)
    percent_part = amount.multiply(rule.percent, rounding=Rounding.HALF_UP)
    fixed = Money.of(rule.fixed_major, amount.currency, rounding=Rounding.HALF_UP)
    return percent_part + fixed


def dispute_fee(currency: str) -> Money:
    """The flat fee a dispute costs, in the dispute's currency (no FX: a sandbox rule)."""
    return Money.of(DISPUTE_FEE_MAJOR, currency, rounding=Rounding.HALF_UP)


def counter_fee(currency: str) -> Money:
    """The fee for countering a dispute with evidence; a win refunds it."""
    return Money.of(COUNTER_FEE_MAJOR, currency, rounding=Rounding.HALF_UP)

"""What each component is worth, computed from explicit inputs rather than asserted.

Every figure the site quotes from the study plan is recomputed here, with
its inputs named, so a reader can change an input and see the answer move.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from payment_systems.money import Money, Rounding


@dataclass(frozen=True, slots=True)
class DuplicateCost:
    """The monthly cost of duplicate charges, and what preventing them returns."""

    duplicates: int
    refunded_value: Money
    chargebacks: int
    chargeback_fees: Money
    total: Money
    prevention_cost: Money

    @property
    def roi(self) -> Decimal:
        """Monthly cost avoided per unit of monthly prevention cost (265x in the study plan)."""
        return Decimal(self.total.amount_minor) / Decimal(self.prevention_cost.amount_minor)


SEED_AVERAGE_TRANSACTION = Money(5000, "USD")
SEED_CHARGEBACK_FEE = Money(1500, "USD")
SEED_REDIS_COST = Money(20000, "USD")


def duplicate_charge_cost(
    transactions_per_month: int = 1_000_000,
    average_transaction: Money = SEED_AVERAGE_TRANSACTION,
    duplicate_rate: Decimal = Decimal("0.001"),
    chargeback_share: Decimal = Decimal("0.20"),
    chargeback_fee: Money = SEED_CHARGEBACK_FEE,
    prevention_cost: Money = SEED_REDIS_COST,
) -> DuplicateCost:
    """The study plan's Day 1 calculation: 0.1% duplicates at 1M transactions a month.

    Each duplicate is money taken twice and given back (the study plan counts
    the whole amount as lost: refunds, support time and churn). A share of the
    customers do not wait for the refund and file a chargeback, which costs a
    fee on top. ``prevention_cost`` is the Redis that prevents it.

    Examples:
        >>> cost = duplicate_charge_cost()
        >>> cost.duplicates, str(cost.refunded_value), cost.chargebacks, str(cost.total)
        (1000, '50000.00 USD', 200, '53000.00 USD')
        >>> cost.roi
        Decimal('265')
    """
    duplicates = int(
        (Decimal(transactions_per_month) * duplicate_rate).to_integral_value(Rounding.HALF_UP)
    )
    chargebacks = int((duplicates * chargeback_share).to_integral_value(Rounding.HALF_UP))
    refunded = average_transaction.multiply(duplicates, rounding=Rounding.HALF_UP)
    fees = chargeback_fee.multiply(chargebacks, rounding=Rounding.HALF_UP)
    return DuplicateCost(duplicates, refunded, chargebacks, fees, refunded + fees, prevention_cost)


@dataclass(frozen=True, slots=True)
class WebhookBandwidth:
    """Daily traffic and cost of delivering webhooks."""

    bytes_per_day: int
    gigabytes_per_day: Decimal
    cost_per_day: Money
    cost_per_month: Money


def webhook_bandwidth(
    events_per_day: int,
    payload_bytes: int,
    overhead_bytes: int = 600,
    usd_per_gb: Decimal = Decimal("0.09"),
) -> WebhookBandwidth:
    """Bandwidth of ``events_per_day`` webhooks of ``payload_bytes`` each.

    ``overhead_bytes`` covers the HTTP request line, headers (signature, user
    agent, content type) and the response; ``usd_per_gb`` is an egress price
    (an input: cloud list prices are around $0.05-0.09 per GB).

    Examples:
        >>> bw = webhook_bandwidth(1_000_000_000, 2_000)
        >>> str(bw.gigabytes_per_day), str(bw.cost_per_month)
        ('2600', '7020.00 USD')
    """
    total = events_per_day * (payload_bytes + overhead_bytes)
    gigabytes = Decimal(total) / Decimal(10**9)
    per_day = Money.of(gigabytes * usd_per_gb, "USD", rounding=Rounding.HALF_UP)
    return WebhookBandwidth(
        total, gigabytes, per_day, per_day.multiply(30, rounding=Rounding.HALF_UP)
    )


@dataclass(frozen=True, slots=True)
class ReconciliationCost:
    """The monthly cost of reconciling by hand, and the payback of automating it."""

    discrepancies_per_month: Money
    investigation_per_month: Money
    total_per_month: Money
    automation_cost: Money

    @property
    def payback_months(self) -> Decimal:
        """Months of savings to pay for the automation (under 1: the first month)."""
        return Decimal(self.automation_cost.amount_minor) / Decimal(
            self.total_per_month.amount_minor
        )


SEED_DAILY_VOLUME = Money(100_000_000, "USD")
SEED_ANALYST_RATE = Money(10_000, "USD")
SEED_AUTOMATION_COST = Money(50_000, "USD")


def reconciliation_cost(
    daily_volume: Money = SEED_DAILY_VOLUME,
    error_rate: Decimal = Decimal("0.0001"),
    investigation_hours_per_day: Decimal = Decimal("2"),
    hourly_rate: Money = SEED_ANALYST_RATE,
    days_per_month: int = 30,
    automation_cost: Money = SEED_AUTOMATION_COST,
) -> ReconciliationCost:
    """The study plan's Day 3 case: $1M a day, 0.01% unreconciled, 2 h a day to investigate.

    Examples:
        >>> cost = reconciliation_cost()
        >>> [str(m) for m in (cost.discrepancies_per_month, cost.investigation_per_month)]
        ['3000.00 USD', '6000.00 USD']
        >>> str(cost.total_per_month)
        '9000.00 USD'
        >>> cost.payback_months < 1  # "ROI: first month"
        True
    """
    daily_error = daily_volume.multiply(error_rate, rounding=Rounding.HALF_UP)
    daily_people = hourly_rate.multiply(investigation_hours_per_day, rounding=Rounding.HALF_UP)
    monthly_error = daily_error.multiply(days_per_month, rounding=Rounding.HALF_UP)
    monthly_people = daily_people.multiply(days_per_month, rounding=Rounding.HALF_UP)
    return ReconciliationCost(
        monthly_error, monthly_people, monthly_error + monthly_people, automation_cost
    )

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


@dataclass(frozen=True, slots=True)
class FxRevenue:
    """Monthly FX markup revenue and margin."""

    revenue: Money
    cost: Money
    profit: Money

    @property
    def margin(self) -> Decimal:
        return Decimal(self.profit.amount_minor) / Decimal(self.revenue.amount_minor)


def fx_markup_revenue(
    monthly_volume: Money = Money(1_000_000_000, "USD"),
    markup: Decimal = Decimal("0.025"),
    monthly_cost: Money = Money(500_000, "USD"),
) -> FxRevenue:
    """The study plan's Day 4 model: $10M a month cross-border at a 2.5% markup.

    Examples:
        >>> fx = fx_markup_revenue()
        >>> str(fx.revenue), str(fx.profit), fx.margin
        ('250000.00 USD', '245000.00 USD', Decimal('0.98'))
    """
    revenue = monthly_volume.multiply(markup, rounding=Rounding.HALF_UP)
    return FxRevenue(revenue, monthly_cost, revenue - monthly_cost)


@dataclass(frozen=True, slots=True)
class ChargebackDecision:
    """Whether fighting a chargeback pays, per case and per year."""

    expected_recovery: Money  # win rate x (amount + fee)
    cost_to_fight: Money
    fight: bool
    annual_gain: Money  # (expected recovery - cost) x chargebacks per year, if fighting


def chargeback_fight(
    amount: Money = Money(7_500, "USD"),
    fee: Money = Money(1_500, "USD"),
    win_rate: Decimal = Decimal("0.30"),
    cost_to_fight: Money = Money(2_500, "USD"),
    chargebacks_per_month: int = 100,
) -> ChargebackDecision:
    """The study plan's Day 5 rule: fight if win rate x (amount + fee) > cost to fight.

    Examples:
        >>> d = chargeback_fight()
        >>> str(d.expected_recovery), d.fight, str(d.annual_gain)
        ('27.00 USD', True, '2400.00 USD')
    """
    recovery = (amount + fee).multiply(win_rate, rounding=Rounding.HALF_UP)
    fight = recovery > cost_to_fight
    per_case = recovery - cost_to_fight if fight else Money(0, amount.currency)
    return ChargebackDecision(
        recovery,
        cost_to_fight,
        fight,
        per_case.multiply(chargebacks_per_month * 12, rounding=Rounding.HALF_UP),
    )


def three_ds_breakeven_fraud_rate(
    margin: Decimal = Decimal("0.20"),
    fee: Money = Money(1_500, "USD"),
    order: Money = Money(7_500, "USD"),
    chargeback_reduction: Decimal = Decimal("0.80"),
    conversion_loss: Decimal = Decimal("0.15"),
) -> Decimal:
    """The fraud probability above which asking for 3DS pays, for one order.

    3DS removes ``chargeback_reduction`` of the expected chargeback cost
    (amount + fee) but loses ``conversion_loss`` of buyers, each worth
    ``margin`` of the order. Trigger 3DS when
    ``p x (order + fee) x reduction > conversion_loss x margin x order``.

    Examples:
        >>> three_ds_breakeven_fraud_rate()  # above a 3.125% fraud probability, ask for 3DS
        Decimal('0.03125')
    """
    saved_per_unit_p = Decimal((order + fee).amount_minor) * chargeback_reduction
    lost = conversion_loss * margin * Decimal(order.amount_minor)
    return lost / saved_per_unit_p


@dataclass(frozen=True, slots=True)
class SettlementFloat:
    """Money in transit between capture and payout, and what it earns for whoever holds it."""

    average_float: Money  # daily volume x days in transit
    annual_interest: Money
    per_day_earlier: Money  # what settling one day sooner is worth to the merchant, a year


def settlement_float(
    daily_volume: Money = SEED_DAILY_VOLUME,
    days_in_transit: int = 2,
    annual_rate: Decimal = Decimal("0.04"),
) -> SettlementFloat:
    """The study plan's "calculate float benefit from settlement timing".

    Captured funds sit with the PSP until payout: T+2 in the sandbox
    (``SETTLEMENT_DELAY_DAYS``), as at Stripe in the US. On average the
    float is a day's volume times the days in transit, and it earns the
    holder the money-market rate (``annual_rate`` is an assumption: 4%).
    The same figure is what one day faster settlement is worth to a merchant.

    Examples:
        >>> f = settlement_float()  # $1M a day, T+2, 4% a year
        >>> str(f.average_float), str(f.annual_interest), str(f.per_day_earlier)
        ('2000000.00 USD', '80000.00 USD', '40000.00 USD')
    """
    if days_in_transit < 0:
        raise ValueError("days_in_transit must not be negative")
    average_float = daily_volume.multiply(days_in_transit, rounding=Rounding.HALF_EVEN)
    per_day = daily_volume.multiply(annual_rate, rounding=Rounding.HALF_EVEN)
    return SettlementFloat(
        average_float,
        average_float.multiply(annual_rate, rounding=Rounding.HALF_EVEN),
        per_day,
    )


@dataclass(frozen=True, slots=True)
class WeekTotal:
    """The study plan's week-1 total, recomputed from its parts."""

    monthly: Money
    annual: Money
    stated_annual: Money


def week_total() -> WeekTotal:
    """Idempotency + reconciliation + FX monthly, x12, plus the chargeback annual figure.

    The study plan states "Total Annual Value: $4M+"; its own parts add up to
    $3.77M with its stated chargeback saving ($24k), and to $3.75M with the
    chargeback saving its inputs actually give ($2.4k).

    Examples:
        >>> t = week_total()
        >>> str(t.monthly), str(t.annual)
        ('312000.00 USD', '3768000.00 USD')
    """
    stated_chargeback_annual = Money(2_400_000, "USD")  # "$24k/annual saved" as stated
    monthly = (
        duplicate_charge_cost().total
        + reconciliation_cost().total_per_month
        + (fx_markup_revenue().revenue)
    )
    annual = monthly.multiply(12, rounding=Rounding.HALF_UP) + stated_chargeback_annual
    return WeekTotal(monthly, annual, Money(400_000_000, "USD"))


@dataclass(frozen=True, slots=True)
class Case:
    """One business case: what we compute, what the study plan states, and whether they agree."""

    name: str
    inputs: str
    computed: str
    stated: str | None

    @property
    def agrees(self) -> bool | None:
        """None where the study plan asks the question but states no answer."""
        return None if self.stated is None else self.computed == self.stated

    def row(self) -> dict[str, str | bool | None]:
        return {
            "case": self.name,
            "inputs": self.inputs,
            "computed": self.computed,
            "study plan says": self.stated,
            "agrees": self.agrees,
        }


def _usd(money: Money) -> str:
    return f"${money.amount:,.2f}"


def cases() -> list[Case]:
    """Every business case in the study plan, recomputed from its stated inputs."""
    dup = duplicate_charge_cost()
    rec = reconciliation_cost()
    fx = fx_markup_revenue()
    cb = chargeback_fight()
    total = week_total()
    breakeven = three_ds_breakeven_fraud_rate()
    return [
        Case("Idempotency: monthly loss from 0.1% duplicates",
             "1M tx/month, $50 average, 20% become $15 chargebacks", _usd(dup.total), "$53,000.00"),
        Case("Idempotency: ROI of a $200/month Redis", "loss avoided / Redis cost",
             f"{dup.roi}x", "265x"),
        Case("Reconciliation: monthly cost by hand", "$1M/day, 0.01% error, 2 h/day at $100/h",
             _usd(rec.total_per_month), "$9,000.00"),
        Case("FX: monthly markup revenue", "$10M/month at 2.5%", _usd(fx.revenue), "$250,000.00"),
        Case("FX: profit margin", "$5,000/month of costs", f"{fx.margin:.0%}", "98%"),
        Case("Chargebacks: expected recovery per fight", "30% x ($75 + $15) vs $25 to fight",
             _usd(cb.expected_recovery), "$27.00"),
        Case("Chargebacks: annual savings from fighting", "100/month, ($27 - $25) each",
             _usd(cb.annual_gain), "$24,000.00"),
        Case("3DS: break-even fraud probability", "-80% chargebacks, -15% conversion, 20% margin",
             f"{breakeven:.3%}", None),
        Case("Week 1: total annual value", "(53k + 9k + 250k) x 12 + 24k",
             _usd(total.annual), "$4M+"),
    ]  # fmt: skip

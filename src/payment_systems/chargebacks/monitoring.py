"""Card-network chargeback monitoring: which tier each merchant is in, and why.

"Why do chargeback rates affect merchant accounts?" Because the networks
fine the acquirer, per month, for every merchant over their thresholds, and
the acquirer passes the fines on or closes the account. Two programs matter:

* **Visa VAMP** (replaced VDMP and VFMP on 1 April 2025). The ratio is
  (fraud reports + disputes) / settled card-not-present transactions of the
  month, a transaction with both a fraud report and a dispute counted once.
  A merchant is *excessive* at a ratio of 2.2% or more, lowered to 1.5% from
  1 April 2026, and only above 1,500 counted items in the month.
* **Mastercard Excessive Chargeback Program.** The ratio is this month's
  chargebacks over the *previous* month's transactions (chargebacks lag
  sales). *Chargeback Monitored* (CMM) from 1.0% with 100 chargebacks,
  *Excessive* (ECM) from 1.5% with 100, *High Excessive* (HECM) from 3.0%
  with 300.

Inquiries (``warning_*``) and prevented claims are not chargebacks and are
not counted. Everything here is pure: callers count, we classify.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

VAMP_THRESHOLD_UNTIL_2026_04 = Decimal("0.022")
VAMP_THRESHOLD = Decimal("0.015")
VAMP_THRESHOLD_CHANGES_ON = date(2026, 4, 1)
VAMP_MIN_COUNT = 1_500

# (tier, minimum ratio, minimum chargebacks), strictest first
MASTERCARD_TIERS: tuple[tuple[str, Decimal, int], ...] = (
    ("HECM", Decimal("0.030"), 300),
    ("ECM", Decimal("0.015"), 100),
    ("CMM", Decimal("0.010"), 100),
)


@dataclass(frozen=True, slots=True)
class MonthCounts:
    """One merchant's month, as the networks count it."""

    merchant_id: str
    month: date  # the first day of the month
    settled: int  # settled card-not-present transactions this month
    previous_month_settled: int
    chargebacks: int  # disputes that withdrew funds (not inquiries, not prevented)
    fraud_reports_without_dispute: int = 0  # TC40s with no dispute on the same transaction


@dataclass(frozen=True, slots=True)
class ProgramStatus:
    """Where a merchant stands in one network program."""

    program: str
    ratio: Decimal
    count: int
    tier: str  # "standard" when no tier applies
    rule: str  # the threshold that decided it, in words

    @property
    def flagged(self) -> bool:
        return self.tier != "standard"


def _ratio(numerator: int, denominator: int) -> Decimal:
    return Decimal(numerator) / Decimal(denominator) if denominator else Decimal(0)


def vamp(counts: MonthCounts) -> ProgramStatus:
    """The merchant's Visa Acquirer Monitoring Program status for ``counts.month``.

    Examples:
        >>> from datetime import date
        >>> vamp(MonthCounts("m", date(2026, 11, 1), 100_000, 100_000, 1_600)).tier
        'excessive'
        >>> vamp(MonthCounts("m", date(2026, 3, 1), 100_000, 100_000, 1_600)).tier  # 1.6% < 2.2%
        'standard'
    """
    count = counts.chargebacks + counts.fraud_reports_without_dispute
    ratio = _ratio(count, counts.settled)
    threshold = (
        VAMP_THRESHOLD
        if counts.month >= VAMP_THRESHOLD_CHANGES_ON
        else VAMP_THRESHOLD_UNTIL_2026_04
    )
    excessive = ratio >= threshold and count > VAMP_MIN_COUNT
    rule = f"ratio >= {threshold:.1%} and more than {VAMP_MIN_COUNT:,} fraud reports + disputes"
    return ProgramStatus("Visa VAMP", ratio, count, "excessive" if excessive else "standard", rule)


def mastercard(counts: MonthCounts) -> ProgramStatus:
    """The merchant's Mastercard Excessive Chargeback Program tier.

    Examples:
        >>> from datetime import date
        >>> mastercard(MonthCounts("m", date(2026, 11, 1), 9_000, 10_000, 200)).tier  # 2.0%
        'ECM'
        >>> mastercard(MonthCounts("m", date(2026, 11, 1), 9_000, 5_000, 200)).tier  # 4%, < 300
        'ECM'
        >>> mastercard(MonthCounts("m", date(2026, 11, 1), 9_000, 10_000, 99)).tier  # too few
        'standard'
    """
    ratio = _ratio(counts.chargebacks, counts.previous_month_settled)
    for tier, minimum_ratio, minimum_count in MASTERCARD_TIERS:
        if ratio >= minimum_ratio and counts.chargebacks >= minimum_count:
            rule = f"ratio >= {minimum_ratio:.1%} and >= {minimum_count} chargebacks"
            return ProgramStatus("Mastercard ECP", ratio, counts.chargebacks, tier, rule)
    return ProgramStatus(
        "Mastercard ECP", ratio, counts.chargebacks, "standard", "below every ECP tier"
    )


def programs(counts: MonthCounts) -> list[ProgramStatus]:
    """Both networks' view of the merchant's month."""
    return [vamp(counts), mastercard(counts)]

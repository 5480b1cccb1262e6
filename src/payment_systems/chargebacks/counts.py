"""Counting a merchant's month from our database, the way the card networks count it.

The denominator is settled transactions (captured payments, refunded or
not: a refund does not un-settle a sale). The numerator is chargebacks:
disputes that withdrew funds. Inquiries that were answered and prevented
claims never withdrew funds, so they are not counted, which is the whole
point of answering inquiries quickly and refunding early fraud warnings.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from payment_systems.chargebacks.monitoring import MonthCounts, ProgramStatus, programs
from payment_systems.database.models import DisputeRecord, Merchant, Payment

SETTLED = ("succeeded", "partially_refunded", "refunded")


def _month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1)
    return start, end


def _previous(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def _settled(session: Session, merchant_id: str, month: date) -> int:
    start, end = _month_bounds(month)
    return int(
        session.scalar(
            sa.select(sa.func.count()).where(
                Payment.merchant_id == merchant_id,
                Payment.status.in_(SETTLED),
                Payment.created_at >= start,
                Payment.created_at < end,
            )
        )
        or 0
    )


def month_counts(session: Session, merchant_id: str, month: date) -> MonthCounts:
    """``merchant_id``'s counts for the calendar month containing ``month``.

    Examples:
        >>> _previous(date(2026, 1, 15)), _month_bounds(date(2026, 12, 3))[1]
        (datetime.date(2025, 12, 1), datetime.datetime(2027, 1, 1, 0, 0))
    """
    first = date(month.year, month.month, 1)
    start, end = _month_bounds(first)
    chargebacks = session.scalar(
        sa.select(sa.func.count()).where(
            DisputeRecord.merchant_id == merchant_id,
            DisputeRecord.funds_withdrawn.is_(True),
            DisputeRecord.created_at >= start,
            DisputeRecord.created_at < end,
        )
    )
    return MonthCounts(
        merchant_id,
        first,
        _settled(session, merchant_id, first),
        _settled(session, merchant_id, _previous(first)),
        int(chargebacks or 0),
    )


def merchant_tiers(session: Session, month: date) -> dict[str, list[ProgramStatus]]:
    """Every merchant's standing in each network program for ``month``."""
    ids = session.scalars(sa.select(Merchant.id).order_by(Merchant.id))
    return {merchant_id: programs(month_counts(session, merchant_id, month)) for merchant_id in ids}

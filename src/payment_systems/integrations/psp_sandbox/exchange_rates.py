"""``GET /v1/exchange_rates/{currency}``: rates that move with the sandbox clock.

Stripe's shape: ``{"id": "usd", "object": "exchange_rate", "rates": {"eur": 0.9184, ...}}``,
where ``rates[x]`` is how many units of ``x`` one unit of ``id`` buys. Each
rate against USD follows a seeded random walk: a daily walk from a fixed
anchor (0.6% daily volatility) plus a per-minute walk within the day, so
the same instant always gives the same rate, and advancing the sandbox
clock moves the market. Rates are written as exact decimal numbers; clients
should parse them as decimals, never floats.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from functools import cache

MID_PER_USD: dict[str, Decimal] = {
    "usd": Decimal("1"), "eur": Decimal("0.92"), "gbp": Decimal("0.79"),
    "jpy": Decimal("150.0"), "kwd": Decimal("0.307"), "chf": Decimal("0.88"),
    "cad": Decimal("1.36"), "aud": Decimal("1.52"), "inr": Decimal("83.2"),
    "mxn": Decimal("17.1"), "brl": Decimal("5.0"), "bhd": Decimal("0.376"),
}  # fmt: skip
ANCHOR = 1_767_225_600  # 2026-01-01T00:00:00Z
DAILY_VOL = 0.006
SEED = 20_260_101


@cache
def _daily_walk(currency: str, days: int) -> float:
    """Cumulative daily shocks from the anchor to day ``days`` (memoised day by day)."""
    if days <= 0:
        return 0.0
    rng = random.Random(f"{SEED}:{currency}:day:{days}")
    return _daily_walk(currency, days - 1) + rng.gauss(0, DAILY_VOL)


@cache
def _intraday(currency: str, day: int) -> tuple[float, ...]:
    rng = random.Random(f"{SEED}:{currency}:minutes:{day}")
    step = DAILY_VOL / math.sqrt(1440)
    walk, total = [], 0.0
    for _ in range(1440):
        total += rng.gauss(0, step)
        walk.append(total)
    return tuple(walk)


def usd_rate(currency: str, at: int) -> Decimal:
    """Units of ``currency`` per USD at unix time ``at`` (6 significant decimals)."""
    code = currency.lower()
    base = MID_PER_USD[code]
    if code == "usd":
        return base
    elapsed = max(0, at - ANCHOR)
    day, minute = divmod(elapsed // 60, 1440)
    for d in range(0, day, 200):  # warm the memo in steps, so recursion stays shallow
        _daily_walk(code, d)
    shock = _daily_walk(code, day) + _intraday(code, day)[minute]
    return (base * Decimal(repr(math.exp(shock)))).quantize(Decimal("0.000001"))


def rates_json(base: str, at: int) -> str:
    """The endpoint's body: exact decimals as JSON numbers."""
    code = base.lower()
    per_base = usd_rate(code, at)
    rates = {
        other: (usd_rate(other, at) / per_base).quantize(Decimal("0.000001"))
        for other in sorted(MID_PER_USD)
        if other != code
    }
    body = ",".join(f'"{k}":{v}' for k, v in rates.items())
    return f'{{"id":"{code}","object":"exchange_rate","date":{at},"rates":{{{body}}}}}'

"""The 3DS trigger threshold: total profit at each risk-score cut-off.

Not a speed benchmark: a simulation, recorded like one so the page shows
exactly what this code computed, with its seed and inputs.
"""

from __future__ import annotations

from typing import Any

from payment_systems.business.impact import three_ds_breakeven_fraud_rate
from payment_systems.chargebacks.prevention import Economics, Population, profit_curve
from payment_systems.money import Money

TITLE = "3DS trigger threshold: profit over 200,000 scored payments"
PLOT = {"x": "threshold", "y": ["profit (USD)"], "kind": "line", "mark": "optimal",
        "title": "Total profit by 3DS threshold (challenge at score >= threshold)"}  # fmt: skip


def _usd(minor: int) -> str:
    return str(Money(minor, "USD").amount)


def run() -> list[dict[str, Any]]:
    curve = profit_curve(Population.simulate(), Economics())
    never = curve.at(100)
    shown = sorted({*range(0, 101, 5), curve.best})
    return [
        {
            "threshold": t,
            "challenged (%)": round(100 * curve.challenged_share[t], 1),
            "fraud challenged (%)": round(100 * curve.fraud_caught_share[t], 1),
            "profit (USD)": _usd(curve.at(t)),
            "vs never challenging (USD)": _usd(curve.at(t) - never),
            "optimal": "yes" if t == curve.best else "",
        }
        for t in shown
    ]


NOTES = (
    "Population.simulate(n=200_000, fraud_rate=0.01, seed=7): legitimate scores ~ Beta(2, 12), "
    "fraudulent ~ Beta(5, 3), scaled to 0-99. Economics(): $75 order, 20% margin, $15 "
    "chargeback fee, 3DS cuts chargebacks 80% and conversion 15% on challenged payments (the "
    f"study plan). Break-even fraud probability: {three_ds_breakeven_fraud_rate():.3%}. "
    "Threshold 0 challenges everyone; 100 challenges no one."
)

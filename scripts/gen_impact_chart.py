"""Chart each component's annual value, computed by payment_systems.business.impact (gen-files).

The Business impact page shows it with ``![…](business-impact.png)``: the
figure is drawn from the package at build time, like the table beside it,
so it cannot disagree with the code.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_render

from payment_systems.business.impact import (
    chargeback_fight,
    duplicate_charge_cost,
    fx_markup_revenue,
    reconciliation_cost,
)


def _k(value: Decimal) -> str:
    """Thousands of dollars, as exact decimal text (matplotlib converts only to draw)."""
    return str((value / 1000).quantize(Decimal("0.1")))


dup, rec, fx, cb = (
    duplicate_charge_cost(),
    reconciliation_cost(),
    fx_markup_revenue(),
    chargeback_fight(),
)
rows = [
    {"component": "idempotency (loss avoided)", "USD thousands a year": _k(dup.total.amount * 12)},
    {"component": "reconciliation (manual cost avoided)",
     "USD thousands a year": _k(rec.total_per_month.amount * 12)},
    {"component": "FX markup (revenue)", "USD thousands a year": _k(fx.revenue.amount * 12)},
    {"component": "chargebacks (fighting, net)", "USD thousands a year": _k(cb.annual_gain.amount)},
]  # fmt: skip
result = {
    "title": "Annual value per component",
    "rows": rows,
    "plot": {"x": "component", "y": ["USD thousands a year"], "kind": "bar",
             "title": "Annual value per component (payment_systems.business.impact)"},
}  # fmt: skip
with mkdocs_gen_files.open("business-impact.png", "wb") as png:
    png.write(bench_render.chart_png(result))

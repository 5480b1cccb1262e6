"""The home page's study-plan table is the package's plan, row for row."""

from __future__ import annotations

import re
from pathlib import Path

from payment_systems.study.plan import WEEK_1

INDEX = Path(__file__).resolve().parent.parent / "docs" / "index.md"


def _table_rows() -> list[list[str]]:
    rows = []
    for line in INDEX.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_every_day_of_the_plan_budgets_750_lines() -> None:
    assert [d.line_target for d in WEEK_1] == [750] * 7


def test_home_page_table_matches_the_plan_the_package_ships() -> None:
    rows = _table_rows()
    assert len(rows) == len(WEEK_1)
    for (day, theme, files, lines), plan in zip(rows, WEEK_1, strict=True):
        assert int(day) == plan.day
        assert theme == plan.theme
        shown = re.findall(r"`?([^`(,]+?)`? \((\d+)\)", files)
        assert [(p.strip(), int(n)) for p, n in shown] == [(f.path, f.lines) for f in plan.files]
        assert int(lines) == plan.line_target

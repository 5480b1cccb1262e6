"""The study plan's week-1 success metrics, computed from the reader's log and the package.

| metric | target | computed from |
|---|---|---|
| lines studied | 5,250 | the sum of logged ``--lines`` |
| patterns identified | 10+ | distinct logged patterns found in the library |
| business value calculated | $100k+ | the sum of logged ``--value`` |
| components modified and tested | 5 | distinct logged ``--component`` |
| failure modes understood | 20+ | distinct logged ``--failure-mode`` |
| STAR interview stories | 3 | distinct logged ``--story`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from payment_systems.study.library import Pattern, find
from payment_systems.study.plan import WEEK_1
from payment_systems.study.progress import Entry


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: int
    target: int

    @property
    def met(self) -> bool:
        return self.value >= self.target


def identified(entries: list[Entry], patterns: list[Pattern]) -> set[str]:
    """Ids of library patterns the reader has logged (by id or by name)."""
    found = (find(name, patterns) for e in entries for name in e.patterns)
    return {p.id for p in found if p is not None}


def success_metrics(entries: list[Entry], patterns: list[Pattern]) -> list[Metric]:
    def distinct(attr: str) -> int:
        return len({item.strip().lower() for e in entries for item in getattr(e, attr)})

    return [
        Metric("lines studied", sum(e.lines for e in entries),
               sum(d.line_target for d in WEEK_1)),
        Metric("patterns identified", len(identified(entries, patterns)), 10),
        Metric("business value calculated (USD/yr)", sum(e.value_usd for e in entries), 100_000),
        Metric("components modified and tested", distinct("components"), 5),
        Metric("failure modes understood", distinct("failure_modes"), 20),
        Metric("STAR interview stories", distinct("stories"), 3),
    ]  # fmt: skip


def line_count(path: Path) -> int | None:
    """Lines in ``path``, or None when it is not there (tests are not installed)."""
    try:
        return len(path.read_text(encoding="utf-8").splitlines())
    except OSError:
        return None

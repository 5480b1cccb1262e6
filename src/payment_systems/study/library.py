"""The pattern library: each pattern this project teaches, where it lives, and what proves it.

It ships inside the package as ``pattern_library.json`` (the study plan's
``cat pattern_library.json``), so ``payment-systems study patterns`` works
from a plain ``pip install``. Each entry names its module (under
``src/payment_systems/``), its docs page (under ``docs/``) and the tests
that prove it; a test checks that every one of those exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Pattern:
    id: str
    name: str
    day: int
    problem: str
    module: str
    page: str
    tests: tuple[str, ...]


def load_patterns() -> list[Pattern]:
    """Every pattern in the shipped library, in the library's order."""
    raw = resources.files("payment_systems.study").joinpath("pattern_library.json").read_text()
    data = json.loads(raw)
    return [
        Pattern(p["id"], p["name"], int(p["day"]), p["problem"], p["module"], p["page"],
                tuple(p["tests"]))
        for p in data["patterns"]
    ]  # fmt: skip


def find(name_or_id: str, patterns: list[Pattern] | None = None) -> Pattern | None:
    """The pattern with this id, or whose name starts with these words (case-insensitive)."""
    wanted = name_or_id.strip().lower()
    for p in patterns or load_patterns():
        if wanted in (p.id, p.name.lower()) or p.name.lower().startswith(wanted):
            return p
    return None

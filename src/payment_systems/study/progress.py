"""The reader's study log: one JSON line per ``payment-systems study log``.

It lives in the user's data directory (``platformdirs``: on Linux
``~/.local/share/payment-systems/study-log.jsonl``), or wherever
``PAYMENT_SYSTEMS_STUDY_LOG`` points. JSON lines, appended, never
rewritten: a log you can ``grep``, and a crash mid-write loses at most the
line being written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import platformdirs

ENV = "PAYMENT_SYSTEMS_STUDY_LOG"


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return Path(env[ENV])
    return platformdirs.user_data_path("payment-systems") / "study-log.jsonl"


@dataclass(frozen=True, slots=True)
class Entry:
    """One study session's worth of progress."""

    on: str  # ISO date
    lines: int = 0
    patterns: list[str] = field(default_factory=list)
    insights: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    value_usd: int = 0  # business value the reader calculated this session, a year
    components: list[str] = field(default_factory=list)  # modified and tested
    failure_modes: list[str] = field(default_factory=list)
    stories: list[str] = field(default_factory=list)  # STAR stories written

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class ProgressLog:
    """Append-only JSON lines at ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def append(self, entry: Entry) -> Entry:
        if entry.lines < 0 or entry.value_usd < 0:
            raise ValueError("lines and value must not be negative")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(entry), sort_keys=True) + "\n")
        return entry

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Entry.from_json(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{self.path}:{number} is not a study-log line: {exc}") from None
        return out


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def study_day(entries: list[Entry], on: date) -> int:
    """Which day of the week plan ``on`` is: day 1 is the first logged day (1 with no log)."""
    if not entries:
        return 1
    first = min(date.fromisoformat(e.on) for e in entries)
    return max(1, min(7, (on - first).days + 1))

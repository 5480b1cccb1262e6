"""MkDocs hooks: put measured tables on any page with ``<!-- bench: NAME -->``.

The marker is replaced by the table from ``benchmarks/results/NAME.json``,
with the command, machine and date of the run, so prose pages quote
measurements without retyping (and silently staling) a single number.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_render

MARKER = re.compile(r"^<!-- bench: ([a-z0-9_]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        result = bench_render.load(name)
        return (
            f"{bench_render.table(name, result)}\n\n"
            f"{bench_render.provenance(result)} {result.get('notes', '')}"
        )

    return MARKER.sub(replace, markdown)

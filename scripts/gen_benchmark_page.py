"""Render benchmarks/results/*.json as the site's Benchmarks page (mkdocs-gen-files).

The page shows only what the JSON files hold: the numbers, the command that
reproduces each table, the machine and the date of the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import mkdocs_gen_files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def _cell(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render(result: dict[str, object]) -> str:
    rows = result["rows"]
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{result.get('benchmark')}: a result file needs a non-empty 'rows' list")
    columns = list(rows[0])
    machine = result["machine"]
    if not isinstance(machine, dict):
        raise ValueError(f"{result.get('benchmark')}: 'machine' must be an object")
    lines = [
        f"## {result['title']}",
        "",
        f"Reproduce with `{result['command']}`. Measured {result['date']} on "
        f"{machine['cores']} cores of {machine['cpu_model']} ({machine['system']}, "
        f"Python {machine['python']}).",
        "",
        "| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    if result.get("notes"):
        lines += ["", str(result["notes"])]
    return "\n".join(lines) + "\n"


parts = [
    "# Benchmarks\n",
    "Performance claims live here, measured by `nox -s bench`, never in timed unit tests. "
    "Each table is rendered from the JSON file the benchmark wrote under "
    "`benchmarks/results/`, committed with the code.\n",
]
for path in sorted(RESULTS.glob("*.json")):
    parts.append(render(json.loads(path.read_text())))

with mkdocs_gen_files.open("benchmarks.md", "w") as page:
    page.write("\n".join(parts))

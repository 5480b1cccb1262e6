"""Turn a benchmark result file into markdown (and a chart): shared by the docs build.

Used by ``gen_benchmark_page.py`` (the Benchmarks page) and ``mkdocs_hooks.py``
(``<!-- bench: NAME -->`` markers on any page), so a number appears on the
site only as it was measured and written to ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no benchmark result {path}; run `nox -s bench -- {name}`")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def names() -> list[str]:
    return sorted(p.stem for p in RESULTS.glob("*.json"))


def _cell(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def provenance(result: dict[str, Any]) -> str:
    machine = result["machine"]
    return (
        f"Reproduce with `{result['command']}`. Measured {result['date']} on "
        f"{machine['cores']} cores of {machine['cpu_model']} ({machine['system']}, "
        f"Python {machine['python']})."
    )


def table(name: str, result: dict[str, Any]) -> str:
    rows = result["rows"]
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{name}: a result file needs a non-empty 'rows' list")
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def chart_png(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = result["plot"]
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if spec.get("kind") == "line":  # a numeric x axis: a curve, its best point marked
        xs_line = [float(row[spec["x"]]) for row in rows]
        for column in spec["y"]:
            ax.plot(xs_line, [float(row[column]) for row in rows], marker=".", label=column)
        for row in rows:
            if row.get(spec.get("mark", "")):
                ax.axvline(float(row[spec["x"]]), color="grey", linestyle="--", alpha=0.6)
    else:
        width = 0.8 / len(spec["y"])
        for i, column in enumerate(spec["y"]):
            xs = [x + i * width for x in range(len(rows))]
            ax.bar(xs, [float(row[column]) for row in rows], width=width, label=column)
        ticks = [x + width * (len(spec["y"]) - 1) / 2 for x in range(len(rows))]
        labels = [str(row[spec["x"]]) for row in rows]
        long_labels = max(len(label) for label in labels) * len(labels) > 60
        ax.set_xticks(ticks, labels, rotation=20 if long_labels else 0,
                      ha="right" if long_labels else "center")  # fmt: skip
    ax.set_xlabel(spec["x"])
    if len(spec["y"]) > 1:
        ax.legend(fontsize="small")
        ax.set_ylabel(spec.get("ylabel", "value"))
    else:
        ax.set_ylabel(spec["y"][0])
    ax.set_title(spec.get("title", result["title"]))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()

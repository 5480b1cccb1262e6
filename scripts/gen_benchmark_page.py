"""Render every benchmarks/results/*.json on the site's Benchmarks page (mkdocs-gen-files)."""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_render

parts = [
    "# Benchmarks\n",
    "Performance claims live here, measured by `nox -s bench`, never in timed unit tests. "
    "Each table is rendered from the JSON file the benchmark wrote under "
    "`benchmarks/results/`, committed with the code.\n",
]
for name in bench_render.names():
    result = bench_render.load(name)
    section = [f"## {result['title']}", "", bench_render.provenance(result), ""]
    section.append(bench_render.table(name, result))
    if result.get("plot"):
        with mkdocs_gen_files.open(f"benchmarks/{name}.png", "wb") as png:
            png.write(bench_render.chart_png(result))
        section += ["", f"![{result['plot'].get('title', result['title'])}](benchmarks/{name}.png)"]
    if result.get("notes"):
        section += ["", str(result["notes"])]
    parts.append("\n".join(section) + "\n")

# Figures a benchmark drew itself (a flame graph, say) ship beside the charts.
for figure in sorted(bench_render.RESULTS.glob("*.svg")):
    with mkdocs_gen_files.open(f"benchmarks/{figure.name}", "wb") as out:
        out.write(figure.read_bytes())

with mkdocs_gen_files.open("benchmarks.md", "w") as page:
    page.write("\n".join(parts))

"""Shared plumbing: time a callable, and write a result file the docs render.

Every result records the command that reproduces it, the machine and the
date, because a number without its context is not evidence.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payment_systems.infra.machine import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def ops_per_second(fn: Callable[[], object], *, number: int, repeat: int = 5) -> dict[str, float]:
    """Best-of-``repeat`` throughput and per-call latency of ``fn`` called ``number`` times."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        timings.append(time.perf_counter() - start)
    best = min(timings)
    return {
        "ops_per_s": round(number / best),
        "us_per_op": round(best / number * 1e6, 3),
        "median_us_per_op": round(statistics.median(timings) / number * 1e6, 3),
    }


def seconds(fn: Callable[[], object], *, repeat: int) -> dict[str, float]:
    """Median, min and max wall time of ``repeat`` calls (for slow operations)."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return {
        "median_ms": round(statistics.median(timings) * 1000, 1),
        "min_ms": round(min(timings) * 1000, 1),
        "max_ms": round(max(timings) * 1000, 1),
    }


def write_result(
    name: str,
    title: str,
    rows: list[dict[str, Any]],
    *,
    notes: str = "",
    plot: dict[str, Any] | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write ``benchmarks/results/<name>.json`` in the shape the docs page reads."""
    out_dir = results_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {
        "benchmark": name,
        "title": title,
        "command": f"nox -s bench -- {name}",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "notes": notes,
        "plot": plot,
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path

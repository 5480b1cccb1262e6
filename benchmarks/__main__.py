"""Run the benchmarks: ``python -m benchmarks [NAME ...]`` (what ``nox -s bench`` does).

Each ``benchmarks/bench_<name>.py`` module has ``TITLE``, ``NOTES`` and a
``run()`` returning rows; the result goes to ``benchmarks/results/<name>.json``,
which the docs' Benchmarks page renders.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

import benchmarks
from benchmarks.harness import write_result


def available() -> list[str]:
    """Names of all benchmark modules, without the ``bench_`` prefix."""
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> None:
    names = available()
    parser = argparse.ArgumentParser(
        prog="nox -s bench --",
        description="Run benchmarks and write benchmarks/results/<name>.json.",
    )
    parser.add_argument("names", nargs="*", help=f"any of: {', '.join(names)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    console = Console()
    chosen = args.names or names
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarks", total=len(chosen))
        for name in chosen:
            progress.update(task, description=f"bench_{name}")
            module = importlib.import_module(f"benchmarks.bench_{name}")
            rows = module.run()
            path = write_result(
                name,
                module.TITLE,
                rows,
                notes=module.NOTES,
                plot=getattr(module, "PLOT", None),
                results_dir=args.out,
            )
            console.print(f"[green]wrote[/green] {path}")
            progress.advance(task)


if __name__ == "__main__":
    main()

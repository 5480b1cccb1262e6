"""``payment-systems study``: the week plan, the pattern library and your own progress."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

study_app = typer.Typer(
    help="Track the week-1 study plan: dashboard, log, motivate, patterns.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study", rich_help_panel="The study plan")

LogOption = Annotated[
    Path | None,
    typer.Option(
        "--log-file",
        envvar="PAYMENT_SYSTEMS_STUDY_LOG",
        help="Study log (JSON lines). Default: your user data directory.",
    ),
]


def _package_root() -> Path:
    import payment_systems

    return Path(payment_systems.__file__).parent


@study_app.command("dashboard")
def dashboard_command(log_file: LogOption = None) -> None:
    """The week plan against the real modules, the patterns checklist, and your progress."""
    from payment_systems.study.library import load_patterns
    from payment_systems.study.metrics import identified, line_count, success_metrics
    from payment_systems.study.plan import WEEK_1
    from payment_systems.study.progress import ProgressLog

    console = Console()
    root = _package_root()
    plan = Table(title="The week plan against the installed package")
    for column in ("day", "theme", "file", "target", "actual lines"):
        plan.add_column(column, justify="right" if column in ("target", "actual lines") else "left")
    for day in WEEK_1:
        for f in day.files:
            count = line_count(root / f.path) if f.path.endswith(".py") else None
            shown = f"{count:,}" if count is not None else "in the repository"
            plan.add_row(str(day.day), day.theme, f.path, f"{f.lines:,}", shown)
    console.print(plan)
    log = ProgressLog(log_file)
    entries = log.entries()
    patterns = load_patterns()
    seen = identified(entries, patterns)
    checklist = Table(title="Pattern mastery checklist (log a pattern to tick it)")
    for column in ("", "pattern", "module", "page"):
        checklist.add_column(column)
    for p in patterns:
        checklist.add_row("[green]✓[/green]" if p.id in seen else "·", p.name, p.module, p.page)
    console.print(checklist)
    metrics = Table(title=f"Week-1 success metrics, from {log.path}")
    for column in ("metric", "so far", "target", "met"):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for m in success_metrics(entries, patterns):
        metrics.add_row(m.name, f"{m.value:,}", f"{m.target:,}", "yes" if m.met else "not yet")
    console.print(metrics)


@study_app.command("log")
def log_command(
    lines: Annotated[int, typer.Option(min=0, help="Lines of code you studied.")] = 0,
    pattern: Annotated[
        list[str] | None, typer.Option("--pattern", help="A pattern you identified (repeatable).")
    ] = None,
    insight: Annotated[list[str] | None, typer.Option("--insight", help="One insight.")] = None,
    question: Annotated[
        list[str] | None, typer.Option("--question", help="A question for tomorrow.")
    ] = None,
    value: Annotated[
        int, typer.Option(min=0, help="Business value you calculated, USD a year.")
    ] = 0,
    component: Annotated[
        list[str] | None, typer.Option("--component", help="A module you modified and tested.")
    ] = None,
    failure_mode: Annotated[
        list[str] | None, typer.Option("--failure-mode", help="A failure mode you understood.")
    ] = None,
    story: Annotated[
        list[str] | None, typer.Option("--story", help="The title of a STAR story you wrote.")
    ] = None,
    log_file: LogOption = None,
) -> None:
    """Append today's progress to your study log (JSON lines)."""
    from payment_systems.study.library import find
    from payment_systems.study.progress import Entry, ProgressLog, today

    unknown = [p for p in pattern or [] if find(p) is None]
    if unknown:
        raise typer.BadParameter(
            f"not in the pattern library: {unknown}; see `payment-systems study patterns`",
            param_hint="--pattern",
        )
    entry = Entry(
        today(), lines, list(pattern or []), list(insight or []), list(question or []), value,
        list(component or []), list(failure_mode or []), list(story or []),
    )  # fmt: skip
    log = ProgressLog(log_file)
    log.append(entry)
    Console().print(f"logged to {log.path}: {lines} lines, {len(entry.patterns)} pattern(s)")


@study_app.command("motivate")
def motivate_command(log_file: LogOption = None) -> None:
    """Today's target, from the week plan and how far you are."""
    from payment_systems.study.plan import WEEK_1
    from payment_systems.study.progress import ProgressLog, study_day

    entries = ProgressLog(log_file).entries()
    number = study_day(entries, datetime.now(UTC).date())
    day = WEEK_1[number - 1]
    done = sum(e.lines for e in entries)
    total = sum(d.line_target for d in WEEK_1)
    files = ", ".join(f"{f.path} ({f.lines})" for f in day.files)
    console = Console()
    console.print(
        f"[bold]Day {day.day}: {day.theme}[/bold]. Today: {day.line_target} lines: {files}."
    )
    console.print(f"So far: {done:,} of {total:,} lines ({done / total:.0%}).")
    console.print("Ask of every 100 lines: why not simpler? what does it save? what breaks?")


@study_app.command("patterns")
def patterns_command() -> None:
    """The pattern library: each pattern, its module, its page and the test that proves it."""
    from payment_systems.study.library import load_patterns

    table = Table(title="Pattern library (pattern_library.json, shipped in the package)")
    for column in ("id", "pattern", "day", "module", "proved by"):
        table.add_column(column, overflow="fold")
    for p in load_patterns():
        table.add_row(p.id, p.name, str(p.day), p.module, p.tests[0].split("::")[-1])
    Console().print(table)

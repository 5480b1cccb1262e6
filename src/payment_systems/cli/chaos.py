"""``payment-systems chaos``: break the running system on purpose, and prove nothing was lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

PANEL = "Load and chaos"


def summary_table(report: dict[str, Any]) -> Table:
    """One row per scenario: the study plan's five questions, answered."""
    table = Table(title=f"Chaos at scale {report['scale']:g}, {report['rate']:g} payments/s")
    for column in ("scenario", "detected in", "errors in window", "p99 in window",
                   "recovered in", "dup / lost / PSP breaks / book breaks", "passed"):  # fmt: skip
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in report["scenarios"]:
        det = r["detection"]["detected_after_s"]
        rec = r["recovery"]["after_s"]
        money = r["financial"]
        p99 = r["impact"]["p99_ms"]
        table.add_row(
            r["scenario"],
            "never" if det is None else f"{det:.2f} s",
            f"{r['impact']['error_rate']:.0%}",
            "n/a" if p99 is None else f"{p99:,.0f} ms",
            "no" if rec is None else f"{rec:.2f} s",
            f"{money['duplicate_charges']} / {money['lost_payments']} / "
            f"{money['ledger_psp_breaks']} / {money.get('book_breaks', 0)}",
            "[green]yes[/green]" if r["passed"] else "[red]NO[/red]",
        )
    return table


def _scenario_help() -> str:
    from payment_systems.chaos.scenarios import SCENARIOS

    return "; ".join(f"{name}: {s.title}" for name, s in SCENARIOS.items())


@app.command(
    "chaos",
    rich_help_panel=PANEL,
    help=(
        "Run the whole system under steady payment traffic, inject one failure for a "
        "window, remove it, then audit the money. Reports, per scenario: how fast the "
        "monitor detected it (/readyz, /metrics), the error rate and p99 during the window, "
        "how fast it recovered by itself, duplicate charges / lost payments / ledger-vs-PSP "
        "breaks (all must be 0), and the mechanism that held. Exits 1 if any scenario "
        "fails its checks.\n\nEach scenario starts its own system (PostgreSQL, Redis, the "
        "sandbox, 2 API workers) and takes about 30 s at --scale 0.01."
    ),
)
def chaos_command(
    scenarios: Annotated[
        list[str],
        typer.Argument(
            help="Scenario names, or 'all'. Any of: " + _scenario_help(),
            show_default=False,
        ),
    ],
    scale: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=1.0,
            help="Multiply the study plan's fault durations (the PSP outage is 5 minutes at "
            "1.0); each scenario keeps a floor long enough to be noticed.",
        ),
    ] = 0.1,
    rate: Annotated[float, typer.Option(min=1, help="Steady payments per second.")] = 10.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report here as JSON.")
    ] = None,
) -> None:
    from payment_systems.chaos.failure_simulator import run_all

    console = Console(stderr=True)
    try:
        with console.status("chaos") as status:

            def phase(name: str, text: str) -> None:
                status.update(f"[bold]{name}[/bold]: {text}")
                console.log(f"{name}: {text}")

            report = run_all(scenarios, scale=scale, rate=rate, on_phase=phase)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIOS") from None
    Console().print(summary_table(report))
    for r in report["scenarios"]:
        failed = [name for name, ok in r["checks"].items() if not ok]
        if failed:
            console.print(f"[red]{r['scenario']} failed:[/red] {', '.join(failed)}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_out}")
    if not report["passed"]:
        raise typer.Exit(1)

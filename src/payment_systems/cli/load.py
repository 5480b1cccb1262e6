"""``payment-systems load``: drive the Payments API at a constant rate and report honestly."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from payment_systems.cli.root import app

PANEL = "Load and chaos"


def _table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=f"{title}; latency in ms, from the intended send time")
    for column in ("offered/s", "ok/s", "p50", "p95", "p99", "p99.9", "max", "errors",
                   "dup. charges"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        lat = r["latency_ms"]
        dup = "n/a" if r["duplicate_charges"] is None else str(r["duplicate_charges"])
        table.add_row(
            f"{r['offered_rate']:g}", f"{r['achieved_rate']:g}", f"{lat['p50']:g}",
            f"{lat['p95']:g}", f"{lat['p99']:g}", f"{lat['p999']:g}", f"{lat['max']:g}",
            f"{r['error_rate']:.2%}", dup,
        )  # fmt: skip
    return table


@app.command(
    "load",
    rich_help_panel=PANEL,
    help=(
        "Open-loop load at a constant arrival rate against POST /v1/payments. Latency is "
        "measured from the intended send time (no coordinated omission) into an HDR "
        "histogram; errors are counted by status; duplicate charges are counted at the PSP."
        "\n\nThe target must run with FRAUD_RULES=off: the velocity rules rightly block one "
        "test card used thousands of times from one IP."
    ),
)
def load_command(
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PAYMENT_SYSTEMS_API_KEY",
            help="A merchant key of the target API (payment-systems merchants create NAME).",
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Start the whole system on this machine first (2 API workers, the sandbox, "
            "Redis, SQLite) and load it: no set-up, nothing left behind.",
        ),
    ] = False,
    target: Annotated[str, typer.Option(help="The Payments API.")] = "http://127.0.0.1:8000",
    rate: Annotated[float, typer.Option(min=0.1, help="Offered requests per second.")] = 100,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of traffic.")] = 60,
    duplicates: Annotated[
        float,
        typer.Option(
            min=0, max=0.99, help="Share of requests that re-send an earlier idempotency key."
        ),
    ] = 0.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Open connections at most.")] = 64,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="Write latency-over-time + histogram PNG.")
    ] = None,
    psp: Annotated[
        str | None,
        typer.Option(
            envvar="PSP_API_BASE",
            help="The PSP sandbox the API charges through: duplicate charges are counted there.",
        ),
    ] = None,
    psp_key: Annotated[
        str | None, typer.Option(envvar="PSP_API_KEY", help="The API's key at the PSP sandbox.")
    ] = None,
    find_max: Annotated[
        bool,
        typer.Option(
            "--find-max", help="Step the rate up from --rate until a goal breaks; report the max."
        ),
    ] = False,
    max_p99_ms: Annotated[float, typer.Option(help="--find-max goal: p99 at most this.")] = 100,
    max_error_rate: Annotated[float, typer.Option(help="--find-max goal: errors at most.")] = 0.001,
    payment_method: Annotated[str, typer.Option(help="Test payment method.")] = "pm_card_visa",
    seed: Annotated[int, typer.Option(help="Seed for the duplicate schedule.")] = 1,
) -> None:
    """Run one load test, or a capacity search with ``--find-max``."""
    from payment_systems.load_tests.capacity import Goals
    from payment_systems.load_tests.capacity import find_max as search
    from payment_systems.load_tests.payment_load import (
        LoadPlan,
        count_duplicate_charges,
        report,
        run,
    )
    from payment_systems.load_tests.plots import plot

    console = Console(stderr=True)
    stack = ExitStack()
    if local:
        from payment_systems.load_tests.system import running_system

        system = stack.enter_context(running_system("sqlite", workers=2))
        console.print(f"started the system: API {system.url}, PSP {system.psp_url}")
        target, api_key, psp, psp_key = system.url, system.api_key, system.psp_url, system.psp_key
    if api_key is None:
        raise typer.BadParameter(
            "pass --api-key (or PAYMENT_SYSTEMS_API_KEY) for --target, or use --local",
            param_hint="--api-key",
        )
    if psp is None or psp_key is None:
        console.print(
            "[yellow]No --psp/--psp-key (PSP_API_BASE/PSP_API_KEY): duplicate charges will not "
            "be counted. Point them at the sandbox the API charges through.[/yellow]"
        )
    last_samples: list[Any] = []

    def measure(offered: float) -> dict[str, Any]:
        plan = LoadPlan(offered, duration, duplicates, seed, payment_method=payment_method)
        with Progress(
            TextColumn(f"{offered:g}/s"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"), console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("load", total=int(offered * duration), stats="")

            def tick(sent: int, _total: int, samples: Any) -> None:
                done = sum(samples.statuses.values())
                p99 = samples.percentile_ms(99) if done else 0
                stats = f"done {done}  p99 {p99:g} ms  in flight {sent - done}"
                progress.update(task, completed=sent, stats=stats)

            run_id, samples, errors = asyncio.run(
                run(target, api_key, plan, concurrency=concurrency, on_tick=tick)
            )
        counted = count_duplicate_charges(psp, psp_key, run_id) if psp and psp_key else None
        last_samples[:] = [samples]
        return report(plan, samples, errors, counted)

    with stack:  # with --local, the system stops once measured
        if find_max:
            held, steps = search(measure, rate, Goals(max_p99_ms, max_error_rate))
            console.print(_table(steps, f"Capacity search (p99 <= {max_p99_ms:g} ms)"))
            message = f"highest rate that held: {held:g}/s" if held else "no rate held the goals"
            console.print(f"[bold]{message}[/bold]")
            result: dict[str, Any] = {"find_max": True, "highest_rate_held": held, "steps": steps}
        else:
            result = measure(rate)
            console.print(_table([result], f"{target} for {duration:g} s"))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"report: {json_out}")
    if plot_out is not None and last_samples:
        plot(last_samples[0], plot_out, f"{target}, {last_samples[0].statuses.total()} requests")
        console.print(f"plot: {plot_out}")
    steps_run = result["steps"] if find_max else [result]
    doubled = sum(s["duplicate_charges"] or 0 for s in steps_run)
    if doubled:
        console.print(f"[red bold]{doubled} duplicate charge(s) at the PSP[/red bold]")
        raise typer.Exit(1)

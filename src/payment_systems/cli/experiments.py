"""The study plan's experiments."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

experiment_app = typer.Typer(help="The study plan's experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment", rich_help_panel="The study plan")


@experiment_app.command("idempotency")
def experiment_idempotency(
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="baseline, timeout-5s, no-nx, pg-advisory or no-result-cache; repeat it, "
            "or omit it to run all five"
        ),
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="Also write the results to this JSON file.")
    ] = None,
) -> None:
    """Run the same concurrent-duplicates workload against idempotency variants.

    Each variant gets 30 keys x 3 simultaneous clients retrying on 409, a PSP with
    a slow tail (1 call in 10 takes 6 s), and no PSP-side safety net, so every extra
    charge is a duplicate the layer let through. Takes about a minute for all five.
    """
    import json

    from rich.progress import Progress, TaskID

    from payment_systems.experiments.idempotency import KEYS, VARIANTS, run_variant
    from payment_systems.integrations.psp_sandbox.server import run_sandbox_process

    chosen = variant or list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    console = Console()
    results = []
    with run_sandbox_process() as (url, _pid), Progress(console=console, transient=True) as bar:
        for name in chosen:
            task = bar.add_task(f"{name:16}", total=None)

            def advance(task_id: TaskID = task) -> None:
                bar.advance(task_id)

            results.append(run_variant(name, url, on_request=advance))
            bar.remove_task(task)
    table = Table(title=f"Idempotency experiments ({KEYS} keys x 3 concurrent clients)")
    rows = [r.row() for r in results]
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(rows, fh, indent=2)

"""Reconciliation and the business-impact calculators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app


@app.command("reconcile", rich_help_panel="Money in, money out")
def reconcile_command(
    ledger: Annotated[Path, typer.Argument(help="Our ledger export (ledger.csv).", exists=True)],
    psp: Annotated[
        Path, typer.Argument(help="PSP itemized balance report (psp.csv).", exists=True)
    ],
    bank: Annotated[
        Path, typer.Argument(help="Bank statement of deposits (bank.csv).", exists=True)
    ],
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Cut-off, e.g. 2026-11-20T23:59:59Z (default: now). Later items are next run's."
        ),
    ] = None,
    amount_tolerance: Annotated[
        int, typer.Option(help="Minor units of amount difference to accept.")
    ] = 0,
    fee_tolerance: Annotated[
        int, typer.Option(help="Minor units of fee difference to accept.")
    ] = 0,
    carry_in: Annotated[
        Path | None, typer.Option(help="Timing items carried from the previous run (JSON).")
    ] = None,
    carry_out: Annotated[
        Path | None, typer.Option(help="Write this run's timing items here, for the next run.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON.")
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the breaks as CSV.")] = None,
) -> None:
    """Three-way reconciliation of our ledger, the PSP's report and the bank statement.

    The files are CSV, sorted by reference (see the Reconciliation page for the columns).
    Exits 1 if any break other than 'timing' remains, so a scheduler can alert on it, and
    2 if a file cannot be read (the message names the file, line and column to fix).
    """
    import dataclasses
    import json
    from datetime import UTC, datetime

    from payment_systems.core.recon_formats import LedgerRow
    from payment_systems.core.reconciliation import Tolerance, reconcile_files
    from payment_systems.errors import PaymentSystemsError

    when = (
        datetime.strptime(cutoff, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if cutoff
        else datetime.now(UTC)
    )
    carried = [LedgerRow(**row) for row in json.loads(carry_in.read_text())] if carry_in else []
    try:
        report = reconcile_files(
            ledger,
            psp,
            bank,
            cutoff=int(when.timestamp()),
            tolerance=Tolerance(amount_tolerance, fee_tolerance),
            carried=carried,
        )
    except PaymentSystemsError as exc:
        # A bad input file is the user's to fix, not a bug: say what and where, no traceback.
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        raise typer.Exit(2) from None
    report.write(json_out, csv_out)
    if carry_out is not None:
        carry_out.write_text(json.dumps([dataclasses.asdict(r) for r in report.carried_ledger]))
    console = Console()
    table = Table(
        title=f"Reconciliation: {report.matched} matched, {report.payouts_matched} payouts"
    )
    table.add_column("break class")
    table.add_column("count", justify="right")
    table.add_column("amounts (minor units)")
    for cls, info in report.summary().items():
        amounts = ", ".join(f"{k[7:].upper()} {v}" for k, v in info.items() if k != "count")
        table.add_row(cls, str(info["count"]), amounts)
    console.print(table)
    for b in report.breaks[:20]:
        console.print(f"  {b.cls.value:18} {b.reference:32} {b.detail}")
    if len(report.breaks) > 20:
        console.print(f"  ... and {len(report.breaks) - 20} more (see --json / --csv)")
    if report.unexplained:
        raise typer.Exit(1)


@app.command("impact", rich_help_panel="Money in, money out")
def impact_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """The study plan's business cases, recomputed from their stated inputs.

    Each row shows what the inputs give and what the study plan states; where they
    differ, the Business impact page explains why.
    """
    import json

    from payment_systems.business.impact import cases

    rows = [case.row() for case in cases()]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Business impact (payment_systems.business.impact)")
    for column in rows[0]:
        table.add_column(column)
    shown = {True: "yes", False: "NO", None: "n/a"}
    for row in rows:
        table.add_row(
            *(shown[v] if v is None or isinstance(v, bool) else str(v) for v in row.values())
        )
    Console().print(table)


@app.command("reconcile-sources", rich_help_panel="Money in, money out")
def reconcile_sources_command(
    out: Annotated[Path, typer.Argument(help="Directory for ledger.csv, psp.csv and bank.csv.")],
) -> None:
    """Export the three reconciliation sources: our ledger (DATABASE_URL), the PSP's balance
    transactions and its payouts as the bank's deposits (PSP_API_BASE / PSP_API_KEY).
    """
    from payment_systems.config import Settings
    from payment_systems.core.recon_generator import Dataset
    from payment_systems.core.recon_sources import bank_from_payouts, ledger_from_db, psp_from_api
    from payment_systems.database.session import session_factory
    from payment_systems.integrations.stripe_client import PSPClient

    out.mkdir(parents=True, exist_ok=True)
    psp = PSPClient.from_env()
    ledger = ledger_from_db(session_factory(Settings.from_env().database_url))
    rows, bank = psp_from_api(psp), bank_from_payouts(psp)
    paths = Dataset(ledger, rows, bank, cutoff=0).write(out)
    Console().print(
        f"wrote {len(ledger)} ledger, {len(rows)} PSP and {len(bank)} bank rows: "
        + ", ".join(str(p) for p in paths)
    )

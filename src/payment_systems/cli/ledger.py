"""``payment-systems ledger``: what the books say, read from the journal entries."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

ledger_app = typer.Typer(
    help="The double-entry ledger: merchant balances and the books' own checks.",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger", rich_help_panel="Money in, money out")


@ledger_app.command("balances")
def balances_command(
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="Only this merchant id (mer_…).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """What we owe each merchant, per currency: available now, and pending.

    Pending is captured money the PSP has not made available yet. The figures are
    summed from each merchant's own ledger account (DATABASE_URL), never from the
    payment rows, so they show what the books really say.
    """
    from payment_systems.config import Settings
    from payment_systems.database.ledger_store import merchant_balances
    from payment_systems.database.migrate import upgrade
    from payment_systems.database.session import session_factory

    url = Settings.from_env().database_url
    upgrade(url)
    with session_factory(url)() as session:
        rows = merchant_balances(session, int(time.time()), merchant)
    if json_out:
        typer.echo(
            json.dumps(
                [
                    {
                        "merchant": b.merchant_id,
                        "currency": b.currency.lower(),
                        "available": b.available,
                        "pending": b.pending,
                        "total": b.total,
                    }
                    for b in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        typer.echo(
            "no merchant balances yet: take a payment first "
            "(`payment-systems demo`, or POST /v1/payments)"
        )
        return
    from payment_systems.money import Money

    table = Table(title="Merchant balances (minor units shown as money; from the journal)")
    for column in ("merchant", "currency", "available", "pending", "total"):
        table.add_column(column, justify="right" if column not in ("merchant",) else "left")
    for b in rows:
        cur = b.currency
        table.add_row(
            b.merchant_id, cur, str(Money(b.available, cur)), str(Money(b.pending, cur)),
            str(Money(b.total, cur)),
        )  # fmt: skip
    Console().print(table)


@ledger_app.command("check")
def check_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Check the books; exit code 1 if any check fails.

    Every journal balances, no finished payment keeps an open hold, every merchant's
    balance equals its payments' net, and no payment has been left unknown or
    processing for over an hour.
    """
    from payment_systems.config import Settings
    from payment_systems.core.ledger_checks import check_books
    from payment_systems.database.migrate import upgrade
    from payment_systems.database.session import session_factory

    url = Settings.from_env().database_url
    upgrade(url)
    with session_factory(url)() as session:
        report = check_books(session, int(time.time()))
    if json_out:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        console = Console()
        console.print(f"unbalanced journals: {len(report.unbalanced_journals)}")
        console.print(
            f"open holds on finished payments: {len(report.open_holds_on_finished_payments)}"
        )
        console.print(f"merchant balance breaks: {len(report.balance_breaks)}")
        console.print(f"payments unsettled for over an hour: {len(report.unsettled_payments)}")
        for brk in report.balance_breaks[:10]:
            console.print(
                f"  {brk.merchant_id} {brk.currency}: ledger {brk.ledger}, "
                f"payments' net {brk.payments_net}"
            )
        console.print("[green]the books are clean[/green]" if report.clean else "[red]BREAKS[/red]")
    if not report.clean:
        raise typer.Exit(1)

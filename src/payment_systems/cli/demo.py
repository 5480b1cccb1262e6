"""``payment-systems demo``: one payment traced from the API to the bank, live."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

PANEL = "Run the system"


def _facts(facts: dict[str, Any]) -> str:
    lines = []
    for key, value in facts.items():
        if isinstance(value, list) and value and len(str(value)) > 60:
            lines.append(f"{key}:")
            lines.extend(f"  {item}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


@app.command("demo", rich_help_panel=PANEL)
def demo_command(
    amount: Annotated[
        str, typer.Option(help="Amount in major units, e.g. 1000 or 1000.50 (no floats lost).")
    ] = "1000",
    currency: Annotated[
        str,
        typer.Option(help="ISO 4217 code. Not USD: the trace adds an FX quote into USD."),
    ] = "USD",
    json_out: Annotated[bool, typer.Option("--json", help="Print the trace as JSON.")] = False,
) -> None:
    """Trace a payment from API to settlement on a throwaway embedded system.

    Starts the Payments API, Redis, SQLite and the PSP sandbox in this process,
    takes the payment with an idempotency key, retries it, and follows it
    through the fraud check, the PSP, the signed webhook, the outbox, the ledger,
    the payout, the bank statement and a three-way reconciliation. Every step
    prints its timing and ids; the end lists every failure point crossed, the
    component that guards it and the test that proves it, and the system's
    computed availability. Exits 1 if reconciliation is not clean.
    """
    from payment_systems.integration.end_to_end import FAILURE_POINTS, Step, trace
    from payment_systems.money import Money, MoneyError

    try:
        money = Money.of(amount, currency)
    except MoneyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--amount/--currency") from None
    console = Console()
    if not json_out:
        console.print(f"[bold]Tracing a {money} payment end to end[/bold] (embedded system)\n")

    def show(step: Step) -> None:
        if not json_out:
            console.print(f"[bold cyan]{step.number:>2}. {step.name}[/bold cyan]  "
                          f"[dim]{step.component} · {step.ms:g} ms[/dim]")  # fmt: skip
            console.print(_facts(step.facts), highlight=False)

    result = trace(money, on_step=show)
    if json_out:
        typer.echo(json.dumps(result.as_json(), indent=2, default=str))
    else:
        _summary(console, result.as_json(), FAILURE_POINTS)
    if not result.clean:
        raise typer.Exit(1)


def _summary(console: Console, data: dict[str, Any], points: Any) -> None:
    balances = Table(title="Ledger balances for this payment (debit +, credit -; minor units)")
    balances.add_column("account")
    balances.add_column("balance", justify="right")
    for account, value in data["ledger_balances"].items():
        balances.add_row(account, f"{value:,}")
    console.print(balances)
    table = Table(title="Failure points this payment crossed, and what guards each")
    for column in ("step", "what can go wrong", "guard", "proved by"):
        table.add_column(column, overflow="fold")  # test names are the point: never cut
    for p in points:
        table.add_row(p.step, p.failure, p.guard, p.test.split("::")[-1])
    console.print(table)
    rel = data["reliability"]
    down = data["downtime_minutes_per_year"]
    avail = Table(title="Computed availability (integration/reliability.py; inputs on the page)")
    for column in ("what", "availability", "downtime / year"):
        avail.add_column(column, justify="left" if column == "what" else "right")
    for key, label in (
        ("payment_creation", "take a payment"),
        ("payment_creation_with_sql_fallback", "take a payment, IDEMPOTENCY_FALLBACK=sql"),
        ("reads_with_breaker", "read a payment, with the circuit breaker"),
        ("reads_without_breaker", "read a payment, without it"),
    ):
        avail.add_row(label, f"{rel[key]:.4%}", f"{down[key]:,.0f} min")
    console.print(avail)
    verdict = "clean" if data["reconciliation"]["clean"] else "NOT clean"
    console.print(f"Reconciliation: [bold]{verdict}[/bold] ({data['reconciliation']})")

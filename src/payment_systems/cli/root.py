"""The root ``payment-systems`` command: its help, ``--version``, and nothing else.

Command groups live in sibling modules and register themselves on `app`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from payment_systems import __version__

app = typer.Typer(
    name="payment-systems",
    help=(
        "A working reference implementation of the patterns behind a card-payments "
        "platform: idempotency, ledgers, webhooks, outbox, reconciliation, FX, "
        "chargebacks. Every command runs on embedded Redis and SQLite by default; "
        "set REDIS_URL or DATABASE_URL to use your own servers."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"payment-systems {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Root options shared by every sub-command."""

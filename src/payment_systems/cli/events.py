"""The outbox relay and business metrics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

outbox_app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox", rich_help_panel="Events and metrics")


@outbox_app.command("relay")
def outbox_relay(
    once: Annotated[bool, typer.Option(help="One pass, then exit (for cron or tests).")] = False,
    stream: Annotated[str, typer.Option(help="Redis Stream to publish to.")] = "payments:events",
) -> None:
    """Publish committed outbox rows to a Redis Stream, in order per payment.

    Run as many relays as you like on PostgreSQL: each takes the outbox partitions
    no other relay holds. Reads DATABASE_URL and REDIS_URL. Ctrl+C stops it.
    """
    import threading

    from payment_systems.config import Settings
    from payment_systems.infra import create_engine
    from payment_systems.infra.redis import connect_redis
    from payment_systems.patterns.outbox import OutboxRelay

    settings = Settings.from_env()
    relay = OutboxRelay(
        create_engine(settings.database_url), connect_redis(settings.redis_url), stream=stream
    )
    console = Console(stderr=True)
    if once:
        console.print(f"published {relay.relay_once()} event(s) to {stream}")
        return
    console.print(f"relaying to {stream}; Ctrl+C stops")
    stop = threading.Event()
    try:
        relay.run(stop)
    except KeyboardInterrupt:
        stop.set()


metrics_app = typer.Typer(help="Business metrics.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics", rich_help_panel="Events and metrics")


@metrics_app.command("summary")
def metrics_summary(
    url: Annotated[
        str, typer.Option(help="A running API; its /metrics is read.")
    ] = "http://127.0.0.1:8000",
    file: Annotated[
        str | None, typer.Option(help="Read a recorded /metrics scrape from this file instead.")
    ] = None,
) -> None:
    """Print the four business metrics: success rate, latency p95, duplicates, webhook lag."""
    import httpx

    from payment_systems.monitoring.metrics import rows, summarize

    if file is not None:
        with open(file) as fh:
            text = fh.read()
    else:
        try:
            text = httpx.get(f"{url.rstrip('/')}/metrics", timeout=5).text
        except httpx.HTTPError as exc:
            raise typer.BadParameter(
                f"no API answers at {url} ({exc}); start one with `payment-systems serve`, "
                "or pass --file with a saved scrape"
            ) from None
    summary = summarize(text)
    table = Table(title=f"Business metrics ({summary.payments} payments)")
    for column in ("metric", "value", "why it matters"):
        table.add_column(column)
    for row in rows(summary):
        table.add_row(*row)
    Console().print(table)

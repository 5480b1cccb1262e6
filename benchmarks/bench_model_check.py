"""The long model check: the suite's state machine, with more examples and steps, several seeds.

``tests/test_model_check.py`` runs a bounded check (a fixed seed, a few
examples) in the suite; this runs the same `PaymentsModel` far longer, once
per seed and database, and records what it explored and what it found. A
violation is a real bug: the row says which invariant broke, and hypothesis'
shrunk sequence of steps is in the ``failure`` field.

Sizes come from the environment. The defaults (3 seeds, 40 examples of 40
steps, SQLite and PostgreSQL) take about an hour on 2 cores; a smoke run is cheap:
``MODEL_CHECK_SEEDS=1 MODEL_CHECK_EXAMPLES=2 MODEL_CHECK_STEPS=10 python -m
benchmarks model_check --out /tmp/results``. ``MODEL_CHECK_DATABASES``
picks ``sqlite``, ``postgresql`` or both (the default), ``MODEL_CHECK_FIRST_SEED``
where the seeds start (the suite's seed, by default).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, seed, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy.engine import Engine

from payment_systems.infra import EmbeddedPostgres, EmbeddedRedis, create_engine
from payment_systems.integrations.psp_sandbox import SandboxServer, create_app
from payment_systems.integrations.psp_sandbox.delivery import RetryPolicy
from tests.model_check_machine import ModelStats, machine_for, running_system

TITLE = "Model check: random sequences of payments, faults and webhooks against the books"
FIRST_SEED = 20_261_204


def _sizes() -> tuple[list[int], int, int, list[str]]:
    env = os.environ
    seeds = int(env.get("MODEL_CHECK_SEEDS") or 3)
    examples = int(env.get("MODEL_CHECK_EXAMPLES") or 40)
    steps = int(env.get("MODEL_CHECK_STEPS") or 40)
    databases = (env.get("MODEL_CHECK_DATABASES") or "sqlite,postgresql").split(",")
    first = int(env.get("MODEL_CHECK_FIRST_SEED") or FIRST_SEED)
    return [first + i for i in range(seeds)], examples, steps, databases


@contextmanager
def _engine(kind: str, tmp: Path, postgres: EmbeddedPostgres | None) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = create_engine(f"sqlite:///{tmp / f'model-check-{time.monotonic_ns()}.db'}")
    elif kind == "postgresql" and postgres is not None:
        engine = create_engine(postgres.create_database("model_check"))
    else:
        raise ValueError(f"MODEL_CHECK_DATABASES: unknown database {kind!r}")
    try:
        yield engine
    finally:
        engine.dispose()


def check_once(
    engine: Engine, redis_url: str, sandbox_url: str, run_seed: int, examples: int, steps: int
) -> dict[str, Any]:
    """One seeded run on a fresh database: what it explored, and the violation if any."""
    stats = ModelStats()
    started = time.monotonic()
    failure = ""
    client = redis.Redis.from_url(redis_url)
    try:
        with running_system(engine, client, sandbox_url) as system:
            bound = machine_for(system, stats, run=f"bench{run_seed}")
            try:
                run_state_machine_as_test(
                    seed(run_seed)(bound),
                    settings=settings(
                        max_examples=examples,
                        stateful_step_count=steps,
                        deadline=None,
                        database=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    ),
                )
            except Exception as exc:  # a violation, shrunk: recorded, and the other runs go on
                lines = traceback.format_exception_only(exc)
                failure = " / ".join(lines).replace("\n", " / ")[:2000]
    finally:
        client.close()
    return {
        "database": engine.dialect.name,
        "seed": str(run_seed),  # an id, not a quantity: shown without thousands separators
        "examples": stats.examples,
        "steps": stats.steps,
        "full checks": stats.full_checks,
        "payments": stats.payments,
        "PSP timeouts": stats.psp_timeouts,
        "unknown outcomes": stats.unknown_outcomes,
        "refunds confirmed": stats.refunds_confirmed,
        "concurrent refund pairs": stats.concurrent_refund_pairs,
        "unknown refunds retried": stats.unknown_refunds_retried,
        "webhooks delivered": stats.webhooks_delivered,
        "webhook 5xx": stats.webhook_failures,
        "duration s": round(time.monotonic() - started, 1),
        "violations": 1 if failure else 0,
        "failure": failure,
        "rules run": ", ".join(f"{k} {v}" for k, v in sorted(stats.rules.items())),
    }


def run() -> list[dict[str, Any]]:
    seeds, examples, steps, databases = _sizes()
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="model-check-") as raw,
        EmbeddedRedis() as redis_server,
        EmbeddedPostgres() if "postgresql" in databases else _nothing() as postgres,
    ):
        tmp = Path(raw)
        sandbox_app = create_app(
            f"sqlite:///{tmp / 'sandbox.db'}", retry_policy=RetryPolicy(base_s=0.05, cap_s=0.5)
        )
        with SandboxServer(sandbox_app) as sandbox:
            for kind in databases:
                for run_seed in seeds:
                    with _engine(kind, tmp, postgres) as engine:
                        rows.append(
                            check_once(
                                engine, redis_server.url, sandbox.url, run_seed, examples, steps
                            )
                        )
    return [*rows, total(rows)]


def total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One more row: every run added up (the headline: steps explored, violations found)."""
    out: dict[str, Any] = {}
    for column in rows[0]:
        values = [row[column] for row in rows]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[column] = round(sum(values), 1) if column == "duration s" else sum(values)
        else:
            out[column] = "all"
    out["seed"] = ", ".join(sorted({str(row["seed"]) for row in rows}))
    out["failure"] = ""
    out["rules run"] = ""
    return out


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


NOTES = (
    "Each row is one seeded run of tests/model_check_machine.PaymentsModel on a fresh database "
    "(SQLite file or embedded PostgreSQL), with embedded Redis and the PSP sandbox in process. "
    "Every example starts with two fresh merchants and a fresh sandbox account whose webhooks "
    "are held; the rules create payments (USD and JPY, automatic and manual capture, some "
    "declined), capture fully or partly, cancel, refund partly (also two refunds at once), "
    "replay keys with the same and another body, make the PSP time out after doing a write, "
    "run the janitor, and release webhooks in FIFO, LIFO or seeded random order, duplicated "
    "or late. After every step the books are checked (journals balance, no open hold on a "
    "finished payment, merchant balances equal their payments' net); after settling (mid-run "
    "and at the end of every example) the payments are checked against the PSP, the balance "
    "API against the payments, and the ledger is reconciled with the PSP's balance "
    "transactions. 'violations' must be 0; a violation's shrunk failure is in 'failure'."
)

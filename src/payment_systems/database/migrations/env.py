"""Alembic environment: migrations run against the URL the caller configured.

`payment_systems.database.migrate.upgrade` sets ``sqlalchemy.url`` (or passes
a live connection) so the same migrations create the schema on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from payment_systems.database.migrate import sqlite_foreign_keys_off
from payment_systems.database.models import Base
from payment_systems.infra.engines import normalize_url

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=normalize_url(config.get_main_option("sqlalchemy.url") or ""),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    section = config.get_section(config.config_ini_section) or {}
    section["sqlalchemy.url"] = normalize_url(section["sqlalchemy.url"])
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn, sqlite_foreign_keys_off(conn):
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""One place that turns a database URL into a configured SQLAlchemy engine.

Readers paste URLs in the form their server documents (``postgresql://…``);
SQLAlchemy would then pick psycopg2, which we do not install. We normalise to
psycopg 3 here, and give SQLite the settings a payments app needs: foreign
keys on (SQLite leaves them off by default) and a busy timeout, so that two
writers wait for each other instead of failing with "database is locked".
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare PostgreSQL URLs.

    Examples:
        >>> normalize_url("postgres://u@db/app")
        'postgresql+psycopg://u@db/app'
        >>> normalize_url("sqlite:///payments.db")
        'sqlite:///payments.db'
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with this project's per-dialect settings."""
    engine = sa.create_engine(normalize_url(url), **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()

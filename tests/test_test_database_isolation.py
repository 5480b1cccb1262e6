"""The suite never drops the database ``DATABASE_URL`` names (finding 17).

``DATABASE_URL`` is the application's variable: a developer who exported it to
try the API must be able to run the tests without losing that database. The
fixtures reset only ``TEST_DATABASE_URL``, and refuse it when it names the
same database. Each test below plants a sentinel table in an "application"
database on a real PostgreSQL and runs the fixtures' own logic against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from payment_systems.infra import EmbeddedPostgres, create_engine
from tests.conftest import external_test_database, fresh_pg_engine


@pytest.fixture
def server(postgres_server: EmbeddedPostgres | None) -> Iterator[EmbeddedPostgres]:
    """The session's embedded server, or one of our own when TEST_DATABASE_URL is in use."""
    if postgres_server is not None:
        yield postgres_server
        return
    with EmbeddedPostgres() as own:
        yield own


@pytest.fixture
def app_database(server: EmbeddedPostgres) -> str:
    """The application's database, holding a sentinel table, as DATABASE_URL would name it."""
    url = server.create_database("app")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sentinel (note text)"))
        conn.execute(sa.text("INSERT INTO sentinel VALUES ('the application data')"))
    engine.dispose()
    return url


def _sentinel(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT note FROM sentinel")).scalars())
    finally:
        engine.dispose()


def _use(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE scratch (x int)"))
    engine.dispose()


def test_database_url_alone_never_selects_the_database_the_tests_reset(
    server: EmbeddedPostgres, app_database: str
) -> None:
    env = {"DATABASE_URL": app_database}
    assert external_test_database(env) is None  # so postgres_server starts an embedded one
    engine = fresh_pg_engine(server, env)
    assert engine.url.database != sa.make_url(app_database).database
    _use(engine)
    with pytest.raises(AssertionError, match="no TEST_DATABASE_URL"):
        fresh_pg_engine(None, env)  # no path from DATABASE_URL to a reset
    assert _sentinel(app_database) == ["the application data"]


def test_only_test_database_url_is_reset(server: EmbeddedPostgres, app_database: str) -> None:
    scratch = server.create_database("scratch")
    env = {"DATABASE_URL": app_database, "TEST_DATABASE_URL": scratch}
    assert external_test_database(env) == scratch
    _use(fresh_pg_engine(None, env))
    _use(fresh_pg_engine(None, env))  # reset again: the scratch table is gone, so no clash
    assert _sentinel(app_database) == ["the application data"]


def test_test_database_url_naming_the_application_database_is_refused(
    app_database: str,
) -> None:
    other_driver = app_database.replace("postgresql+psycopg://", "postgresql://", 1)
    env = {"DATABASE_URL": app_database, "TEST_DATABASE_URL": other_driver}
    with pytest.raises(pytest.UsageError, match="same database as DATABASE_URL"):
        fresh_pg_engine(None, env)
    with pytest.raises(pytest.UsageError, match="PostgreSQL URL"):
        external_test_database({"TEST_DATABASE_URL": "sqlite:///x.db"})
    assert _sentinel(app_database) == ["the application data"]


def test_no_test_reads_database_url_to_choose_where_to_run() -> None:
    """A guard against the bug coming back in another file.

    conftest.py is exempt: it reads DATABASE_URL only to refuse a TEST_DATABASE_URL
    naming the same database (tested above).
    """
    reads = re.compile(r"""(environ(\.get)?\(?\[?|getenv\()\s*["']DATABASE_URL["']""")
    offenders = [
        str(path)
        for path in Path(__file__).parent.rglob("*.py")
        if path.name != "conftest.py" and reads.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []

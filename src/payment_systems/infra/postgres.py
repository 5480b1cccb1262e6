"""A real PostgreSQL 16 from the ``pgserver`` wheel, for tests and Postgres-only features.

SQLite is the default application database, but advisory locks,
``FOR UPDATE SKIP LOCKED`` and true concurrent writers need Postgres. Rather
than skip those tests on a machine without a server, we start one: pgserver
ships the server binaries and boots a cluster in under a second, on a unix
socket, with no root and no network.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa


class EmbeddedPostgres:
    """Start a private PostgreSQL cluster, hand out fresh databases, stop it.

    pgserver registers its own ``atexit`` hook; `stop` runs it early.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="payment-systems-pg-"))
        self._server: Any = None

    def start(self) -> EmbeddedPostgres:
        """Boot the cluster (initdb on first use); idempotent."""
        if self._server is None:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, root shells).
                warnings.simplefilter("ignore")
                from pgserver.postgres_server import get_server

            self._server = get_server(self.data_dir, cleanup_mode="stop")
        return self

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for ``database`` on this server."""
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not started; call start() first")
        uri: str = self._server.get_uri(database)
        return uri.replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def pid(self) -> int:
        """The postmaster's process id, for leak checks."""
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not started; call start() first")
        return int(self._server.get_pid())

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its URL: isolation without a new cluster."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its data directory; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

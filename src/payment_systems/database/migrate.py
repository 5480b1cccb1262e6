"""``payment-systems db upgrade``: apply the Alembic migrations to any database URL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

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
    with url_or_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

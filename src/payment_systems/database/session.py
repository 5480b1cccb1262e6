"""Engine and session management: created on demand from settings, never at import."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from payment_systems.infra.engines import create_engine


def session_factory(engine_or_url: Engine | str) -> sessionmaker[Session]:
    """A session factory; sessions do not expire objects on commit (we return them)."""
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that commits only if the block finishes; anything else rolls back.

    The state change, its events, its ledger postings (and, later, its outbox
    rows) all go through one of these, so they are written together or not at all.
    """
    with factory() as session, session.begin():
        yield session

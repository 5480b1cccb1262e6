"""Query plans for the hot lookups, so the docs show (and the tests check) index use.

"What indexes optimize idempotency checks?" is answered by the plan itself:
the lookup by (merchant, key) must be one probe of the unique index, never
a scan, at any table size.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

LOOKUP = "SELECT * FROM idempotency_keys WHERE merchant_id = 'm_7' AND key = 'key-7'"
PAYMENT_BY_KEY = "SELECT * FROM payments WHERE merchant_id = 'm_7' AND idempotency_key = 'key-7'"


def explain_idempotency_lookup(engine: Engine, rows: int = 20_000) -> list[str]:
    """Fill ``idempotency_keys`` with ``rows`` rows (Postgres), analyze, and EXPLAIN the lookup."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO idempotency_keys (merchant_id, key, fingerprint, lock_token,"
                " recovery_point, created_at, last_run_at)"
                " SELECT 'm_' || (g % 50), 'key-' || g, 'fp', 0, 'started', now(), now()"
                " FROM generate_series(1, :rows) g"
            ),
            {"rows": rows},
        )
        conn.execute(sa.text("ANALYZE idempotency_keys"))
        return [str(line) for line in conn.execute(sa.text(f"EXPLAIN {LOOKUP}")).scalars()]

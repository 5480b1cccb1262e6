"""Query plans for the hot lookups, so the docs show (and the tests check) index use.

"What indexes optimize idempotency checks?" is answered by the plan itself:
the lookup by (merchant, key) must be one probe of the unique index, never
a scan, at any table size. The same holds for the lookups every webhook and
every dispute sync makes: a payment by its PSP intent id, and the refunds of
a payment (which decide whether a PSP refund is booked already).
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


PAYMENT_BY_INTENT = "SELECT * FROM payments WHERE psp_intent_id = 'pi_7'"
REFUNDS_OF_PAYMENT = (
    "SELECT psp_refund_id FROM refunds WHERE payment_id = 'pay_7' AND status = 'succeeded'"
)


def explain_webhook_lookups(engine: Engine, rows: int = 20_000) -> dict[str, list[str]]:
    """Fill ``payments`` and ``refunds`` with ``rows`` rows each (Postgres), analyze, EXPLAIN.

    Returns each query with its plan: both must probe an index
    (``ix_payments_psp_intent_id``, ``ix_refunds_payment_id``), never scan.
    """
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO merchants (id, name, api_key_hash, api_key_prefix, created_at)"
                " VALUES ('m_7', 'Explain Shop', 'h', 'sk_test_', now())"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO payments (id, merchant_id, idempotency_key, amount_minor, currency,"
                " status, capture_method, payment_method, metadata, amount_captured,"
                " amount_refunded, fee_minor, psp_intent_id, version, created_at, updated_at)"
                " SELECT 'pay_' || g, 'm_7', 'key-' || g, 1000, 'USD', 'succeeded', 'automatic',"
                " 'pm_card_visa', '{}', 1000, 0, 59, 'pi_' || g, 2, now(), now()"
                " FROM generate_series(1, :rows) g"
            ),
            {"rows": rows},
        )
        conn.execute(
            sa.text(
                "INSERT INTO refunds (id, payment_id, merchant_id, amount_minor, currency,"
                " status, psp_refund_id, created_at, updated_at)"
                " SELECT 're_' || g, 'pay_' || g, 'm_7', 100, 'USD', 'succeeded', 're_psp_' || g,"
                " now(), now() FROM generate_series(1, :rows) g"
            ),
            {"rows": rows},
        )
        conn.execute(sa.text("ANALYZE payments"))
        conn.execute(sa.text("ANALYZE refunds"))
        return {
            query: [str(line) for line in conn.execute(sa.text(f"EXPLAIN {query}")).scalars()]
            for query in (PAYMENT_BY_INTENT, REFUNDS_OF_PAYMENT)
        }

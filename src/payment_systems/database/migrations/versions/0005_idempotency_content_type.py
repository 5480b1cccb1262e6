"""idempotency keys remember the response's content type

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:00:00

``idempotency_keys.response_content_type``: a replay must send the stored
response byte for byte, headers included. Without the column the SQL backend
replayed a stored 4xx problem (``application/problem+json``) as
``application/json``. Nullable: rows stored before this revision have none,
and the backend reads them as the API wrote them then (problem+json for a
4xx or 5xx, JSON otherwise).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("response_content_type", sa.String(length=100), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("response_content_type")

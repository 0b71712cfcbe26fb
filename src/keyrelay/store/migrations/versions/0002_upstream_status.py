"""The request log keeps the upstream's own status beside the status keyrelay answered.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_logs") as batch:
        batch.add_column(sa.Column("upstream_status", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("gateway_logs") as batch:
        batch.drop_column("upstream_status")

"""Approvals: parked requests waiting for a human (sealed), and the request log's `approval_id` column (its
`would_deny` column came with 0006).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_logs") as batch:
        batch.add_column(sa.Column("approval_id", sa.String(36)))
    op.create_index("ix_gateway_logs_approval_id", "gateway_logs", ["approval_id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("source_id", sa.String(36), nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("caller", sa.String(80), nullable=False),
        sa.Column("caller_kind", sa.String(16), nullable=False),
        sa.Column("caller_scopes", sa.Text, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(2048), nullable=False),
        sa.Column("action", sa.String(200)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("request_key_id", sa.String(36), nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=False),
        sa.Column("body_bytes", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("link_digest", sa.String(64), unique=True),
        sa.Column("decided_at", sa.Float),
        sa.Column("decided_by", sa.String(80)),
        sa.Column("executed_at", sa.Float),
        sa.Column("upstream_status", sa.Integer),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.String(500)),
        sa.Column("result_key_id", sa.String(36)),
        sa.Column("result", sa.LargeBinary),
        sa.Column("result_expires_at", sa.Float),
        sa.Column("fetched_at", sa.Float),
    )
    op.create_index("ix_approvals_workspace_id", "approvals", ["workspace_id"])
    op.create_index("ix_approvals_status", "approvals", ["status"])


def downgrade() -> None:
    op.drop_table("approvals")
    op.drop_index("ix_gateway_logs_approval_id", "gateway_logs")
    with op.batch_alter_table("gateway_logs") as batch:
        batch.drop_column("approval_id")

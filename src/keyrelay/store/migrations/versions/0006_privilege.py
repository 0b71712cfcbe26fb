"""Least privilege: applications hold workspaces and scopes (existing ones keep every workspace and scope), API
keys may carry a constraint set, attenuated tokens, request budget counters, and the request log's `would_deny`.

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ALL_SCOPES_TEXT = "admin approve execute files logs mcp proxy query"


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("workspaces", sa.Text, nullable=False, server_default="*"))
        batch.add_column(sa.Column("scopes", sa.Text, nullable=False, server_default=ALL_SCOPES_TEXT))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("constraints", sa.Text))
    with op.batch_alter_table("gateway_logs") as batch:
        batch.add_column(sa.Column("would_deny", sa.String(64)))
    op.create_table(
        "derived_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("root_digest", sa.String(64), nullable=False),
        sa.Column("ancestors", sa.Text, nullable=False),
        sa.Column("constraints", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_index("ix_derived_tokens_root_digest", "derived_tokens", ["root_digest"])
    op.create_table(
        "budget_counters",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("used", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("budget_counters")
    op.drop_table("derived_tokens")
    with op.batch_alter_table("gateway_logs") as batch:
        batch.drop_column("would_deny")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("constraints")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("scopes")
        batch.drop_column("workspaces")

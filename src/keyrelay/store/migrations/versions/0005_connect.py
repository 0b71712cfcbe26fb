"""Connect: connect sessions, OAuth authorization state, operators' OAuth clients, webhooks and their deliveries.

Revision ID: 0005
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connect_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
        sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("connectors", sa.Text, nullable=False),
        sa.Column("source_id", sa.String(36)),
        sa.Column("redirect_url", sa.String(2048)),
        sa.Column("allowed_origins", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("connected_source_id", sa.String(36)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float),
    )
    op.create_index("ix_connect_sessions_workspace_id", "connect_sessions", ["workspace_id"])
    op.create_index("ix_connect_sessions_expires_at", "connect_sessions", ["expires_at"])
    op.create_table(
        "connect_oauth_states",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("connect_sessions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("verifier", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float),
    )
    op.create_index("ix_connect_oauth_states_session_id", "connect_oauth_states", ["session_id"])
    op.create_table(
        "oauth_clients",
        sa.Column("connector", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(1024), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("client_secret", sa.LargeBinary, nullable=False),
        sa.Column("scopes", sa.Text),
        sa.Column("authorize_url", sa.String(2048)),
        sa.Column("token_url", sa.String(2048)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("webhook_id", sa.String(36), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(300)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
    )
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id"])
    op.create_index("ix_webhook_deliveries_next_attempt_at", "webhook_deliveries", ["next_attempt_at"])


def downgrade() -> None:
    for name in ("webhook_deliveries", "webhooks", "oauth_clients", "connect_oauth_states", "connect_sessions"):
        op.drop_table(name)

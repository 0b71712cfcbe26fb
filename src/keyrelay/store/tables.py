"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` create exactly this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

applications = sa.Table(
    "applications", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False, unique=True),
    sa.Column("secret_digest", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # application | workspace
    sa.Column("application_id", sa.String(36), nullable=False),
    sa.Column("workspace_id", sa.String(36)),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

workspaces = sa.Table(
    "workspaces", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # space-separated
    sa.Column("hint", sa.String(16), nullable=False),  # first characters, to recognise a key
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)

sources = sa.Table(
    "sources", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("slug", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON, never secret
    sa.Column("policy", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.String(16), nullable=False),  # active | inactive | needs_reauth
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("workspace_id", "slug", name="uq_sources_workspace_slug"),
)

source_secrets = sa.Table(
    "source_secrets", metadata,
    sa.Column("source_id", sa.String(36), sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(36), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
)

vault_keys = sa.Table(
    "vault_keys", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | retired
    sa.Column("created_at", sa.Float, nullable=False),
)

gateway_logs = sa.Table(
    "gateway_logs", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("workspace_id", sa.String(36), index=True),
    sa.Column("source_id", sa.String(36)),
    sa.Column("door", sa.String(16), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.String(2048), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("upstream_latency_ms", sa.Float),
    sa.Column("bytes_in", sa.BigInteger, nullable=False),
    sa.Column("bytes_out", sa.BigInteger, nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.String(500)),
    sa.Column("caller", sa.String(80)),
    sa.Column("connector", sa.String(64)),
    sa.Column("upstream_status", sa.Integer),
)

# The operator console (docs/console.md): server-side sessions and one-time sign-in links, both stored only as
# SHA-256 digests of the random values the browser holds.
console_sessions = sa.Table(
    "console_sessions", metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # public: CSRF tokens are bound to it
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("application_id", sa.String(36), nullable=False, index=True),
    sa.Column("method", sa.String(16), nullable=False),  # secret | link
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # absolute end, whatever the activity
    sa.Column("ended_at", sa.Float),
)

console_links = sa.Table(
    "console_links", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("application_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float),
)

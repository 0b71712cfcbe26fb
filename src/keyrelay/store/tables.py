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
    sa.Column("destination", sa.Text),  # bound into the ciphertext; NULL: sealed before destinations were bound
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
    sa.Column("would_deny", sa.String(64)),  # observe mode: the rule that would have refused the request
    sa.Column("approval_id", sa.String(36), index=True),  # the approval a row parks, decides or executes
)

approvals = sa.Table(
    "approvals", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("source_id", sa.String(36), nullable=False),  # no foreign key: a deleted source fails cleanly
    sa.Column("door", sa.String(16), nullable=False),
    sa.Column("caller", sa.String(80), nullable=False),
    sa.Column("caller_kind", sa.String(16), nullable=False),
    sa.Column("caller_scopes", sa.Text, nullable=False),  # space-separated
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.String(2048), nullable=False),  # as the request log shows it: no query values
    sa.Column("action", sa.String(200)),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("request_key_id", sa.String(36), nullable=False),
    sa.Column("request", sa.LargeBinary, nullable=False),  # sealed: AES-GCM bound to the approval and its hash
    sa.Column("body_bytes", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("link_digest", sa.String(64), unique=True),  # HMAC of the single-use decision link's token
    sa.Column("decided_at", sa.Float),
    sa.Column("decided_by", sa.String(80)),
    sa.Column("executed_at", sa.Float),
    sa.Column("upstream_status", sa.Integer),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.String(500)),
    sa.Column("result_key_id", sa.String(36)),
    sa.Column("result", sa.LargeBinary),  # sealed kept response, until fetched once or past its expiry
    sa.Column("result_expires_at", sa.Float),
    sa.Column("fetched_at", sa.Float),
)

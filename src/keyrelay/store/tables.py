"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` create exactly this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ALL_SCOPES_TEXT = "admin approve execute files logs mcp proxy query"  # what applications held before scopes

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
    sa.Column("workspaces", sa.Text, nullable=False, server_default="*"),  # "*" or space-separated workspace ids
    sa.Column("scopes", sa.Text, nullable=False, server_default=ALL_SCOPES_TEXT),  # space-separated
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
    sa.Column("constraints", sa.Text),  # JSON constraint set, NULL: unconstrained
)

derived_tokens = sa.Table(  # attenuated tokens: a child of a token, an API key or another derived token
    "derived_tokens", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("root_digest", sa.String(64), nullable=False, index=True),  # the application/scoped token or API key
    sa.Column("ancestors", sa.Text, nullable=False),  # space-separated ids of the derived tokens above it
    sa.Column("constraints", sa.Text, nullable=False),  # JSON list: the whole chain, the root's set first
    sa.Column("expires_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

budget_counters = sa.Table(  # requests counted per budget key: per clock hour or day (bucket), or in total (0)
    "budget_counters", metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("used", sa.BigInteger, nullable=False),
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

# --- Connect (docs/connect.md): sessions, OAuth state, operators' OAuth clients, webhooks -----------------------
# A sealed value outside `source_secrets` is bound to (table name, row id, column name) as its vault context, so key
# rotation (store/keyring.py) can re-encrypt it without knowing what it is.

connect_sessions = sa.Table(
    "connect_sessions", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("token_digest", sa.String(64), nullable=False, unique=True),
    sa.Column("workspace_id", sa.String(36), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("connectors", sa.Text, nullable=False),  # JSON list of connector names
    sa.Column("source_id", sa.String(36)),  # reconnect: the source whose credentials are replaced
    sa.Column("redirect_url", sa.String(2048)),
    sa.Column("allowed_origins", sa.Text, nullable=False),  # JSON list of origins
    sa.Column("config", sa.Text, nullable=False),  # JSON {connector: {field: value}}, never secret
    sa.Column("status", sa.String(16), nullable=False),  # pending | connected | expired
    sa.Column("checks", sa.Integer, nullable=False, server_default="0"),  # live checks run (a bounded number)
    sa.Column("connected_source_id", sa.String(36)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("used_at", sa.Float),
)

connect_oauth_states = sa.Table(
    "connect_oauth_states", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # HMAC of the `state` sent to the provider
    sa.Column("session_id", sa.String(36), sa.ForeignKey("connect_sessions.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON: the customer's config fields (shop, subdomain)
    sa.Column("key_id", sa.String(36), nullable=False),
    sa.Column("verifier", sa.LargeBinary, nullable=False),  # the PKCE code verifier, sealed
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float),
)

oauth_clients = sa.Table(
    "oauth_clients", metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(1024), nullable=False),
    sa.Column("key_id", sa.String(36), nullable=False),
    sa.Column("client_secret", sa.LargeBinary, nullable=False),  # sealed
    sa.Column("scopes", sa.Text),  # JSON list, or NULL for the catalog's default scopes
    sa.Column("authorize_url", sa.String(2048)),
    sa.Column("token_url", sa.String(2048)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # space-separated event types
    sa.Column("key_id", sa.String(36), nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),  # the signing secret, sealed
    sa.Column("created_at", sa.Float, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("webhook_id", sa.String(36), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the JSON body sent, never a secret
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False, index=True),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.String(300)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
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

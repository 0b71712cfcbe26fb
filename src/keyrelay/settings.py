"""Settings: the ONLY reader of environment variables. Every field is documented in docs/settings.md."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """keyrelay's configuration, read from `KEYRELAY_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="KEYRELAY_", extra="ignore", frozen=True)

    data_dir: Path = Field(Path("./keyrelay-data"), description="SQLite database and master key file")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    master_key: SecretStr | None = Field(None, description="base64 of 32 bytes; default: key file")
    redis_url: str | None = Field(None, description="shared rate limits, locks and live logs")
    admin_client_id: str | None = None
    admin_client_secret: SecretStr | None = None
    upstream_allow_cidrs: str = Field("", description="networks exempt from the SSRF guard")
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="default request body limit")
    max_admin_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_header_count: int = Field(100, ge=8)
    max_url_bytes: int = Field(8192, ge=256)
    header_timeout_seconds: float = Field(10.0, gt=0)
    upstream_max_connections: int = Field(512, ge=1)
    workspace_max_concurrency: int = Field(64, ge=1)
    caller_rate_limit_per_minute: int | None = Field(None, ge=1)
    max_range_bytes: int = Field(64 * 1024 * 1024, ge=1, description="longest byte range one file read returns")
    local_roots: str = Field("", description="directories local file sources may serve (comma-separated)")
    log_retention_days: int = Field(30, ge=1)
    log_flush_seconds: float = Field(0.5, gt=0)
    workers: int = Field(1, ge=1, le=64, description="worker processes `keyrelay serve` runs on one port")
    token_cache_seconds: float = Field(1.0, ge=0, description="how long a token lookup is reused")
    source_cache_seconds: float = Field(1.0, ge=0, description="how long a resolved source is reused")
    cors_origins: str = ""
    mcp_allowed_origins: str = Field("", description="Origin values accepted on /mcp (comma-separated)")
    mcp_allowed_hosts: str = Field("", description="extra Host values accepted on /mcp (comma-separated)")
    mcp_token: SecretStr | None = Field(None, description="token `keyrelay mcp-stdio` sends (client side only)")
    console_idle_seconds: float = Field(1800.0, gt=0, description="a console session ends after this much inactivity")
    console_session_seconds: float = Field(43200.0, gt=0, description="a console session ends this long after sign-in")
    console_link_seconds: float = Field(300.0, gt=0, description="how long a `keyrelay console-link` link works")
    console_sign_in_per_minute: int = Field(10, ge=1, description="sign-ins per minute per client id / address")
    console_secure_cookie: bool | None = Field(None, description="Secure cookie; unset: over https")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|debug|info|warning|error)$")
    public_url: str | None = Field(None, description="where browsers, OAuth providers, agents and approvers reach "
                                                     "keyrelay (links, poll URLs)")
    connect_redirect_allowlist: str = Field("", description="origins or URL prefixes connect sessions may "
                                                            "redirect to (comma-separated)")
    webhook_retry_seconds: float = Field(30.0, gt=0, description="first webhook retry delay; doubles per attempt")
    approval_max_body_bytes: int = Field(1024 * 1024, ge=0, description="largest body a parked request may carry")
    approval_max_response_bytes: int = Field(1024 * 1024, ge=0, description="largest kept response body")
    approval_result_ttl_seconds: float = Field(900.0, gt=0, le=7 * 86_400, description="how long a kept response "
                                               "waits to be fetched")
    approval_max_wait_seconds: float = Field(60.0, ge=0, le=300, description="longest `Prefer: wait` honoured")
    approval_max_pending: int = Field(1000, ge=1, description="pending approvals per workspace")
    approval_page_url: str | None = Field(None, pattern=r"^https?://[!-~]*\{id\}[!-~]*$",
                                          description="where approvers decide: a URL template with {id}")
    approval_webhook_url: str | None = Field(None, description="endpoint of the approval.requested webhook")
    approval_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of its signatures")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.rstrip("/")
        if not v.startswith(("http://", "https://")) or any(c in v for c in "?#@ \\") or "/" in v.split("//", 1)[1]:
            raise ValueError("must be an origin such as https://keyrelay.example.com (no path, query or userinfo)")
        return v

    @model_validator(mode="after")
    def _webhook_pair(self) -> Settings:
        if (self.approval_webhook_url is None) != (self.approval_webhook_secret is None):
            raise ValueError("approval_webhook_url and approval_webhook_secret go together")
        return self

    @field_validator("upstream_allow_cidrs")
    @classmethod
    def _cidrs_parse(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            ipaddress.ip_network(part, strict=True)
        return v

    @field_validator("local_roots")
    @classmethod
    def _roots_absolute(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            if not part.startswith("/"):
                raise ValueError(f"{part!r} is not an absolute directory")
        return v

    @property
    def local_root_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.local_roots.split(",") if p.strip())

    @property
    def mcp_origins(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.mcp_allowed_origins.split(",") if p.strip())

    @property
    def mcp_hosts(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.mcp_allowed_hosts.split(",") if p.strip())

    def hand_to_workers(self) -> None:
        """Put what `keyrelay serve` took from its options (host, port, worker count) into the environment its
        worker processes start with: each worker reads its settings from there, like any keyrelay process."""
        os.environ.update(KEYRELAY_HOST=self.host, KEYRELAY_PORT=str(self.port), KEYRELAY_WORKERS=str(self.workers))

    @property
    def shared_windows_path(self) -> Path | None:
        """The rate-limit table the workers of one server share; None with one worker or with Redis."""
        return self.data_dir / "ratelimit.windows" if self.workers > 1 and not self.redis_url else None

    @property
    def allow_networks(self) -> tuple[Network, ...]:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=True) for p in self.upstream_allow_cidrs.split(",") if p.strip()
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keyrelay.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def key_file(self) -> Path:
        return self.data_dir / "master.key"

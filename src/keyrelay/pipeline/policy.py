"""Step 5: what the source's policy allows: connector kind, method, body size."""

from __future__ import annotations

from keyrelay.errors import MethodNotAllowed, PayloadTooLarge, WrongSourceType
from keyrelay.model import Policy, Source

API_CONNECTOR_KINDS = frozenset({"api"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# never forwarded, whatever the allowlist says: the HTTP client sends CONNECT in authority form (`host:port`),
# so the request would not be confined to the source's base path
NEVER_FORWARDED = frozenset({"CONNECT", "TRACE"})  # TRACE would echo the injected credential


FILE_CONNECTOR_KINDS = frozenset({"files"})


def check_kind(source: Source, kind: str | None, allowed: frozenset[str]) -> None:
    if kind not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise WrongSourceType(f"Source '{source.slug}' is a {kind or 'unknown'} source, not a {wanted} source")


def check_method(policy: Policy, method: str) -> None:
    if method in NEVER_FORWARDED or (policy.allowed_methods is not None and method not in policy.allowed_methods):
        raise MethodNotAllowed(f"Method '{method}' is not allowed for this source")


def body_limit(policy: Policy, default: int) -> int:
    return default if policy.max_body_bytes is None else min(policy.max_body_bytes, default)


def check_declared_length(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")

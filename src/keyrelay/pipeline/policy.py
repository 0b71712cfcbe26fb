"""Step 5: what the source's policy allows: connector kind, method, a body on a safe method, body size.

In observe mode (`policy.mode: "observe"`, docs/security.md: observe mode) the source's refusing rules (method
allowlist, write policy, rate limit, approval) let the request through and `note` records the rule that would
have refused it. Rules that protect keyrelay, the credential or other tenants are never observe-only:
connector kind, CONNECT/TRACE, bodies on safe methods, body size (and authentication, tenant isolation, SSRF
and the header policy elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable

from keyrelay.errors import InvalidRequest, KeyrelayError, MethodNotAllowed, PayloadTooLarge, WrongSourceType
from keyrelay.model import BodyStream, Policy, Source

Note = Callable[[str], None]  # records the name of a rule that would have refused the request
# the rules a source may observe instead of enforce: the request log's `would_deny` values
RULE_METHODS, RULE_WRITES, RULE_RATE, RULE_APPROVAL = "allowed_methods", "allow_writes", "rate_limit_per_minute", \
    "approval"

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


def refuse(policy: Policy, rule: str, err: KeyrelayError, note: Note | None) -> None:
    """Raise `err`; in observe mode (with somewhere to note it) record `rule` instead and let the request on."""
    if note is not None and policy.observing:
        note(rule)
        return
    raise err


def check_method(policy: Policy, method: str, *, read_only: bool = False, note: Note | None = None) -> None:
    """`read_only`: a catalog connector whose policy does not allow writes; only safe methods pass, whatever
    `allowed_methods` says (docs/security.md: source policy)."""
    if method in NEVER_FORWARDED:  # would echo or escape the base path: never observe-only
        raise MethodNotAllowed(f"Method '{method}' is not allowed for this source")
    if policy.allowed_methods is not None and method not in policy.allowed_methods:
        refuse(policy, RULE_METHODS, MethodNotAllowed(f"Method '{method}' is not allowed for this source"), note)
    if read_only and method not in SAFE_METHODS:
        refuse(policy, RULE_WRITES, MethodNotAllowed(f"Method '{method}' is not allowed: this source is read-only "
                                                     "(its policy does not allow writes)"), note)


def has_body(body: BodyStream | bytes | None, content_length: int | None) -> bool:
    """Whether a request carries a body: a declared non-zero length, any streamed body (chunked), or bytes."""
    if content_length:
        return True
    return body is not None and not (isinstance(body, bytes) and not body)


def check_safe_method_body(policy: Policy, method: str, body: BodyStream | bytes | None,
                           content_length: int | None) -> None:
    """A GET, HEAD or OPTIONS request with a body is refused unless the source allows it: upstreams disagree
    about such bodies, which is how requests are smuggled (docs/security.md: source policy)."""
    if method in SAFE_METHODS and not policy.allow_body_on_safe_methods and has_body(body, content_length):
        raise InvalidRequest(f"A {method} request may not carry a body on this source "
                             "(policy.allow_body_on_safe_methods is false)", field="body")


def body_limit(policy: Policy, default: int) -> int:
    return default if policy.max_body_bytes is None else min(policy.max_body_bytes, default)


def check_declared_length(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")

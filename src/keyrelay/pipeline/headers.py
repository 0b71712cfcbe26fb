"""Header policy in both directions: allowlisted, never blocklisted (docs/security.md, "Headers are allowlisted").

Request (agent -> upstream), applied to the agent's headers *before* credentials are injected:

* `ALWAYS_DROP` (no allowlist can re-admit these): authorization, proxy-authorization, cookie, host,
  content-length, transfer-encoding, connection, keep-alive, te, trailer, upgrade, http2-settings,
  proxy-connection, expect, forwarded, x-real-ip, x-original-url, x-rewrite-url, x-original-uri,
  x-original-host, x-host, x-http-host-override, x-http-method-override, x-method-override, x-http-method;
  every name starting with `x-forwarded-` or `x-keyrelay-`; every header named in the agent's `Connection`.
* Then only the allowlist passes: the source's `policy.forward_headers`, or `DEFAULT_FORWARD`: accept,
  accept-charset, accept-encoding (passed through; keyrelay never decodes), accept-language, content-type,
  content-encoding, content-language, if-match, if-none-match, if-modified-since, if-unmodified-since,
  range, if-range, cache-control, user-agent, idempotency-key, prefer, x-request-id, and API version or
  selector headers: stripe-version, stripe-account, x-github-api-version, anthropic-version,
  anthropic-beta, openai-beta, notion-version, square-version, intercom-version. Names with `_` never pass.
  Values with control characters (CR, LF, NUL and the rest egress/http1.py refuses; HTAB is allowed) or invalid
  UTF-8 raise `InvalidRequest`.

Response (upstream -> agent): everything passes except `RESPONSE_DROP` (hop-by-hop: connection, keep-alive,
proxy-authenticate, proxy-connection, te, trailer, transfer-encoding, upgrade, http2-settings; and
set-cookie, set-cookie2, server, x-powered-by, date (the front server sets its own), alt-svc,
strict-transport-security, public-key-pins(-report-only), clear-site-data: these would bind the upstream's
policy to keyrelay's origin), names starting with `access-control-` (keyrelay owns its CORS policy) or
`x-keyrelay-` (no spoofing our own headers), headers named in the upstream's `Connection`, `content-length`
unless the body passes through unchanged, malformed names and values with control characters. A header
whose value holds an injected secret (in any form `Redactor` knows) is kept with the secret replaced by
`[REDACTED]`; one whose *name* holds a secret is dropped: the name as sent, and the name as the agent gets it
(lower case, so a secret in any case counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.redact import Redactor

ALWAYS_DROP: frozenset[bytes] = frozenset({
    b"authorization", b"proxy-authorization", b"cookie", b"host", b"content-length", b"transfer-encoding",
    b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"http2-settings", b"proxy-connection",
    b"expect", b"forwarded", b"x-real-ip", b"x-original-url", b"x-rewrite-url", b"x-original-uri",
    b"x-original-host", b"x-host", b"x-http-host-override", b"x-http-method-override", b"x-method-override",
    b"x-http-method",
})
ALWAYS_DROP_PREFIXES: tuple[bytes, ...] = (b"x-forwarded-", b"x-keyrelay-")

DEFAULT_FORWARD: frozenset[str] = frozenset({
    "accept", "accept-charset", "accept-encoding", "accept-language", "content-type", "content-encoding",
    "content-language", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range",
    "if-range", "cache-control", "user-agent", "idempotency-key", "prefer", "x-request-id",
    "stripe-version", "stripe-account", "x-github-api-version", "anthropic-version", "anthropic-beta",
    "openai-beta", "notion-version", "square-version", "intercom-version",
})

RESPONSE_DROP: frozenset[bytes] = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"http2-settings", b"set-cookie", b"set-cookie2", b"server",
    b"x-powered-by", b"date", b"alt-svc", b"strict-transport-security", b"public-key-pins",
    b"public-key-pins-report-only", b"clear-site-data",
})
RESPONSE_DROP_PREFIXES: tuple[bytes, ...] = (b"access-control-", b"x-keyrelay-")

MAX_FORWARD_NAMES = 100
_FIELD = "policy.forward_headers"
_TOKEN = re.compile(r"[!#$%&'*+\-.^`|~0-9A-Za-z]{1,128}")  # RFC 9110 tchar without "_"
_TOKEN_US = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")  # the same with "_" (dropped, not an error)
_TOKEN_B = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_US_B = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # what egress/http1.py refuses to send; HTAB allowed


def is_always_dropped(name: str) -> bool:
    """Whether a (lowercase) request header name can never be forwarded."""
    b = name.encode("ascii", "replace")
    return b in ALWAYS_DROP or b.startswith(ALWAYS_DROP_PREFIXES)


@lru_cache(maxsize=1024)
def _allow(forward: frozenset[str]) -> frozenset[bytes]:
    """The allowlist as bytes, minus anything always dropped: the hot loop needs one set lookup."""
    ok = (n for n in forward if _TOKEN.fullmatch(n) and n == n.lower() and not is_always_dropped(n))
    return frozenset(n.encode("ascii") for n in ok)


_DEFAULT_ALLOW = _allow(DEFAULT_FORWARD)


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")} - {b""}


def request_headers(
    raw: Sequence[tuple[bytes, bytes]], forward: frozenset[str] | None
) -> list[tuple[str, str]]:
    """Headers to send upstream from ASGI raw headers (lowercase names); None = `DEFAULT_FORWARD`."""
    allow = _DEFAULT_ALLOW if forward is None else _allow(forward)
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        if name in allow:
            out.append((name, value))
        elif name == b"connection":
            named = _connection_tokens(value) if named is None else named | _connection_tokens(value)
    result: list[tuple[str, str]] = []
    for name, value in out:
        if named and name in named:
            continue
        sname = name.decode("ascii")
        if _BAD_VALUE.search(value):
            raise InvalidRequest(f"header {sname!r} contains a control character", field="headers")
        try:
            result.append((sname, value.decode("utf-8")))
        except UnicodeDecodeError:
            raise InvalidRequest(f"header {sname!r} is not valid UTF-8", field="headers") from None
    return result


def headers_from_mapping(headers: Mapping[str, str] | None) -> tuple[tuple[bytes, bytes], ...]:
    """The request API's JSON `headers` object (already checked to map strings to strings) as raw header pairs
    with lowercase names. Nothing is refused here: `check_names` and `request_headers` apply the rules inside
    the pipeline, after the caller is authenticated."""
    if not headers:
        return ()
    sp = "surrogatepass"  # a lone surrogate in JSON must reach the UTF-8 check, not fail here
    # bytes.lower() folds ASCII only: a name like "acc\u212aept" (KELVIN SIGN) must not become "accept"
    return tuple((name.encode("utf-8", sp).lower(), value.encode("utf-8", sp)) for name, value in headers.items())


def check_names(raw: Sequence[tuple[bytes, bytes]]) -> None:
    """Refuse header names that are not tokens (names with `_` are allowed here and never forwarded)."""
    for name, _ in raw:
        if not _TOKEN_US_B.fullmatch(name):
            shown = name[:64].decode("utf-8", "replace")
            raise InvalidRequest(f"invalid header name {shown!r}", field="headers")


def validate_forward_list(names: Iterable[str]) -> frozenset[str]:
    """Check a policy's `forward_headers` at source create/update time; returns the lowercase set."""
    if isinstance(names, str | bytes):
        raise InvalidRequest("forward_headers must be a list of header names", field=_FIELD)
    out: set[str] = set()
    for n in names:
        if not isinstance(n, str) or not _TOKEN.fullmatch(n):
            shown = n[:64] if isinstance(n, str) else type(n).__name__
            raise InvalidRequest(f"invalid header name {shown!r} (token characters, no '_')", field=_FIELD)
        low = n.lower()
        if is_always_dropped(low):
            raise InvalidRequest(f"header {low!r} can never be forwarded", field=_FIELD)
        out.add(low)
    if len(out) > MAX_FORWARD_NAMES:
        raise InvalidRequest(f"at most {MAX_FORWARD_NAMES} header names", field=_FIELD)
    return frozenset(out)


_DROP = object()
_response_names: dict[bytes, bytes | object] = {}  # name as sent -> lowercase name to keep, or _DROP


def _response_name(rname: bytes) -> bytes | object:
    name = rname.lower()
    if name in RESPONSE_DROP or name.startswith(RESPONSE_DROP_PREFIXES) or not _TOKEN_B.fullmatch(name):
        return _DROP
    return name


def response_headers(
    raw: Sequence[tuple[bytes, bytes]], *, redactor: Redactor | None, passthrough_length: bool
) -> list[tuple[bytes, bytes]]:
    """Upstream response headers (any name case) to return to the agent, lowercase names."""
    kept: list[tuple[bytes, bytes, bytes]] = []  # (name, value, name as sent: secrets are case-sensitive)
    named: set[bytes] | None = None
    names = _response_names
    for rname, value in raw:
        name = names.get(rname)
        if name is None:
            name = _response_name(rname)
            if len(names) < 4096:  # names are few in practice; never let an upstream grow this without bound
                names[rname] = name
        if name is _DROP:
            if rname.lower() == b"connection":
                named = _connection_tokens(value) if named is None else named | _connection_tokens(value)
            continue
        assert isinstance(name, bytes)
        if name == b"content-length" and not passthrough_length:
            continue
        if _BAD_VALUE.search(value):
            continue
        kept.append((name, value, rname))
    if named:
        kept = [h for h in kept if h[0] not in named]
    if redactor is not None and redactor.active:
        # one scan of names as sent and values, one of names as the agent gets them (lower case): usually clean
        if redactor.clean_head(b"\n".join(r + b"\n" + v for _, v, r in kept), b"\n".join(n for n, _, _ in kept)):
            return [(n, v) for n, v, _ in kept]
        return [(n, redactor.redact_bytes(v)) for n, v, r in kept
                if not redactor.contains(r) and not redactor.contains_folded(n)]
    return [(n, v) for n, v, _ in kept]

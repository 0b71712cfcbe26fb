"""Where a request may go: base URLs, agent tails and URLs, outbound URL assembly (docs/security.md: the
destination is fixed).

Parse once, reject anything ambiguous, rebuild from validated parts; never `urljoin` or re-parse agent input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from urllib.parse import SplitResult, quote, unquote, unquote_plus, unquote_to_bytes, urlsplit

import ada_url

from keyrelay.errors import DestinationNotAllowed, InvalidRequest, UriTooLong

MAX_URL_CHARS = 8192
MAX_SEGMENTS = 128
DEFAULT_PORTS = {"http": 80, "https": 443}

_PRINTABLE = re.compile(r"[\x21-\x7e]*")  # printable ASCII without space
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded `.`, `/`, `\`, `?`, `#` and control bytes are never needed in a path segment an agent sends.
_ENCODED_FORBIDDEN = re.compile(r"%(2e|2f|5c|3f|23|[01][0-9a-f]|7f)", re.IGNORECASE)
# Checked on the once-decoded text: double encoding of the above (and of `%` itself).
_DOUBLE_ENCODED = re.compile(r"%(2e|2f|5c|00|25|3f|23)", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_WHATWG_PATH_ESCAPES = {c: f"%{ord(c):02X}" for c in '"<>^`{}'}  # what a WHATWG parser encodes in a path
_OUTSIDE = "URL is outside this source's API"


@dataclass(frozen=True)
class BaseUrl:  # not slots: `origin` is a cached_property
    """A validated upstream base: lowercase ASCII host (IPv6 unbracketed), raw path without trailing slash."""

    scheme: str
    host: str
    port: int
    path: str

    @cached_property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


def normalize_host(host: str) -> str:
    """Lowercase DNS name or canonical IP literal (IPv6 unbracketed); odd numeric forms -> InvalidRequest."""
    bad = InvalidRequest("URL host is not a valid host")
    h = host.lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
        if ":" not in h:
            raise bad
    if ":" in h:
        try:
            if "%" in h:
                raise ValueError("zone ids are never allowed")
            return str(ipaddress.IPv6Address(h))
        except ValueError:
            raise bad from None
    labels = h.split(".")
    if len(h) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise bad  # also: non-ASCII, empty labels, a trailing dot
    if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _DOTTED_QUAD.fullmatch(h):
        raise bad  # 2130706433, 0177.0.0.1, 0x7f.0.0.1, 127.1: resolvers would read these as addresses
    return h


_CACHED_MAX = 256  # pure checks of short strings are cached (agents repeat paths); long ones never fill memory


def validate_tail(raw: str) -> str:
    """Return the still-encoded path tail unchanged if it is unambiguous; raise otherwise."""
    return _validate_tail_cached(raw) if len(raw) <= _CACHED_MAX else _validate_tail(raw)


def _validate_tail(raw: str) -> str:
    if len(raw) > MAX_URL_CHARS:
        raise UriTooLong("Path is too long")
    if not raw:
        return raw
    if not _PRINTABLE.fullmatch(raw) or any(c in raw for c in "\\?#") or _BAD_ESCAPE.search(raw) \
            or _ENCODED_FORBIDDEN.search(raw) or _DOUBLE_ENCODED.search(unquote_to_bytes(raw).decode("latin-1")):
        raise InvalidRequest("Path contains characters or sequences that are not allowed")
    segments = raw.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise UriTooLong("Path has too many segments")
    for i, seg in enumerate(segments):
        if not seg and i != len(segments) - 1:  # `a//b`, a leading `/`; a trailing slash is fine
            raise InvalidRequest("Path must not contain empty or dot segments")
        if seg and not unquote(seg).split(";", 1)[0].strip("."):  # `.`, `..`, `...`, `..;x`, `..%3b`, `;x`
            raise InvalidRequest("Path must not contain empty or dot segments")
    return raw


def validate_query(raw: str, *, drop: Collection[str] = ()) -> str:
    """Return the raw query byte-exact, minus parameters named in `drop` (the ones keyrelay injects)."""
    if not raw:
        return raw
    if len(raw) > MAX_URL_CHARS:
        raise UriTooLong("Query string is too long")
    drop = frozenset(drop)
    return _validate_query_cached(raw, drop) if len(raw) <= _CACHED_MAX else _validate_query(raw, drop)


def _validate_query(raw: str, drop: frozenset[str]) -> str:
    if not _PRINTABLE.fullmatch(raw) or "#" in raw:
        raise InvalidRequest("Query string contains characters that are not allowed")
    if not drop or not raw:
        return raw
    dropped, kept = set(drop), []
    for part in raw.split("&"):
        names = [_param_name(p) for p in part.split(";")]
        if names[0] & dropped:
            continue
        if any(n & dropped for n in names[1:]):  # `x=1;api_key=...` for servers that split on `;`
            raise InvalidRequest("Query string sets a parameter that keyrelay controls")
        kept.append(part)
    return "&".join(kept)


_validate_tail_cached = lru_cache(maxsize=4096)(_validate_tail)  # errors are never cached
_validate_query_cached = lru_cache(maxsize=4096)(_validate_query)


def _param_name(param: str) -> set[str]:
    name = param.split("=", 1)[0]
    names = {unquote(name), unquote_plus(name)}
    return names | {n.lstrip("?") for n in names}  # `??api_key=` : some parsers strip every leading `?`


def build_url(base: BaseUrl, tail: str, query: str = "", extra_query: Sequence[tuple[str, str]] = ()) -> str:
    """Assemble origin + base path + validated tail + validated query + keyrelay's own parameters."""
    return _assemble(base, base.path + ("/" + tail if tail else ""), query, extra_query)


def _assemble(base: BaseUrl, path: str, query: str, extra_query: Sequence[tuple[str, str]]) -> str:
    params = [query] if query else []
    params += [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in extra_query]
    return base.origin + (path or "/") + ("?" + "&".join(params) if params else "")


def _check_raw(url: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise UriTooLong("URL is too long")
    if not _PRINTABLE.fullmatch(url) or "\\" in url:
        raise InvalidRequest("URL contains characters that are not allowed")


def _split(url: str) -> tuple[SplitResult, str, int]:
    """urlsplit once; return the parts, the raw host (brackets kept) and the port (explicit or default)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidRequest("URL is not valid") from None
    if "#" in url:
        raise InvalidRequest("URL must not contain a fragment")
    if not parts.scheme or not parts.netloc:
        raise InvalidRequest("URL must be absolute")
    if "@" in parts.netloc:
        raise InvalidRequest("URL must not contain credentials")
    netloc = parts.netloc
    end = netloc.find("]") + 1 if netloc.startswith("[") else len(netloc.split(":", 1)[0])
    host, rest = netloc[:end], netloc[end:]
    if not host or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]) and int(rest[1:]) < 65536)):
        raise InvalidRequest("URL has an invalid host or port")
    port = int(rest[1:]) if rest else DEFAULT_PORTS.get(parts.scheme, 0)
    return parts, host, port


def _whatwg_agrees(url: str, scheme: str, host: str, port: int, path: str) -> tuple[bool, bool]:
    """Differential check against a WHATWG parser: (origin agrees, path agrees)."""
    try:
        w = ada_url.URL(url)
    except ValueError:
        return False, False
    w_scheme = w.protocol.removesuffix(":")
    w_port = int(w.port) if w.port else DEFAULT_PORTS.get(w_scheme, 0)
    origin_ok = (w_scheme, w.hostname.strip("[]"), w_port) == (scheme, host, port) and not (
        w.username or w.password or w.hash)
    expected = "".join(_WHATWG_PATH_ESCAPES.get(c, c) for c in (path or "/"))
    return origin_ok, w.pathname == expected


def parse_base_url(url: str) -> BaseUrl:
    """Validate an operator-configured upstream/base URL (http or https, no userinfo, query or fragment)."""
    _check_raw(url)
    if "?" in url:
        raise InvalidRequest("Upstream URL must not contain a query")
    parts, raw_host, port = _split(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise InvalidRequest("Upstream URL scheme must be http or https")
    host = normalize_host(raw_host)
    path = parts.path.removesuffix("/")
    if path:
        validate_tail(path[1:])
        if path.endswith("/"):
            raise InvalidRequest("Path must not contain empty or dot segments")
    if _whatwg_agrees(url, parts.scheme, host, port, parts.path) != (True, True):
        raise InvalidRequest("Upstream URL is ambiguous")
    return BaseUrl(scheme=parts.scheme, host=host, port=port, path=path)


def match_request_url(url: str, base: BaseUrl, *, drop_query: Collection[str] = ()) -> str:
    """Check an agent-supplied URL lies under `base` and return the outbound URL rebuilt from its parts."""
    _check_raw(url)
    parts, raw_host, port = _split(url)
    host = raw_host.lower()
    host = host[1:-1] if host.startswith("[") else host
    if (parts.scheme, host, port) != (base.scheme, base.host, base.port):
        raise DestinationNotAllowed(_OUTSIDE)
    origin_ok, path_ok = _whatwg_agrees(url, parts.scheme, host, port, parts.path)
    if not origin_ok:
        raise DestinationNotAllowed(_OUTSIDE)
    if not path_ok:
        raise InvalidRequest("URL path is ambiguous")
    path = parts.path
    if path != base.path and not path.startswith(base.path + "/"):
        raise DestinationNotAllowed(_OUTSIDE)  # base `/v1` admits `/v1` and `/v1/...`, not `/v1x`
    tail = validate_tail(path[len(base.path) + 1 :])
    query = validate_query(parts.query, drop=drop_query)
    if path == base.path:
        return build_url(base, "", query)
    return _assemble(base, base.path + "/" + tail, query, ())  # keeps a trailing slash the agent sent

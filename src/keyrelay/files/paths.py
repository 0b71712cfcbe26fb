"""Path containment: an agent names a key *below* the source's root; it can never name one outside it.

The agent's path arrives still percent-encoded (the door takes it from the raw request path). It is decoded
here exactly once, and refused (400 `invalid_request`) when it is in any way ambiguous:

* raw bytes outside printable ASCII, a raw backslash, `?`/`#`;
* a percent-encoded `/`, `\\`, `.` or NUL, or a malformed escape (`%zz`, a truncated `%2`);
* a decoded key that still contains an escape (`%2e` after decoding `%252e`): double encoding;
* after decoding: invalid UTF-8, control/format/private/unassigned characters (bidi overrides, zero-width
  characters, C0/C1 controls, NUL), and segments that are empty (`a//b`, a leading `/`), `.` or `..`, or that
  look like `.`/`..` or contain a slash or backslash after Unicode compatibility folding (fullwidth dots,
  the two-dot leader, division and fullwidth slashes);
* keys longer than S3's 1024-byte limit.

A valid key is joined onto the configured root prefix with exactly one `/`; nothing is ever normalised away.
"""

from __future__ import annotations

import re
import unicodedata

from keyrelay.errors import InvalidRequest

KEY_MAX_BYTES = 1024
_HEX = frozenset("0123456789abcdefABCDEF")
_FORBIDDEN_ESCAPES = frozenset({0x2F, 0x5C, 0x2E, 0x00})  # / \ . NUL (`%25` is a literal '%')
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# slash and backslash look-alikes that Unicode folding leaves alone (fraction, division, big, set-minus ...)
_SLASHES = frozenset("/\\\u2044\u2215\u29f8\u29f5\u29f9\u2216\ufe68\uff0f\uff3c")


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, field="path")


def decode(raw: str) -> str:
    """Percent-decode an agent's raw (ASCII) path once, refusing every ambiguous form."""
    if any(not (0x20 < ord(c) < 0x7F) for c in raw):
        raise _refuse("Path must be printable ASCII; percent-encode other bytes")
    if "\\" in raw or "?" in raw or "#" in raw:
        raise _refuse("Path may not contain a backslash, '?' or '#'")
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != "%":
            out.append(ord(c))
            i += 1
            continue
        pair = raw[i + 1:i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            raise _refuse("Path has a malformed percent-escape")
        value = int(pair, 16)
        if value in _FORBIDDEN_ESCAPES:
            raise _refuse("Path may not percent-encode '/', '\\', '.' or NUL")
        out.append(value)
        i += 3
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("Path is not valid UTF-8") from None


def _check_segment(seg: str) -> None:
    if seg in ("", ".", ".."):
        raise _refuse("Path may not contain empty, '.' or '..' segments")
    if any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in seg):
        raise _refuse("Path may not contain control, format or unassigned characters")
    folded = unicodedata.normalize("NFKC", seg)
    if folded.strip() in (".", "..") or any(ch in _SLASHES for ch in folded):
        raise _refuse("Path may not contain characters that fold to '.', '..', '/' or '\\'")


def check_key(key: str) -> str:
    """Validate a decoded key relative to the root: one or more clean segments joined by '/'."""
    if not key:
        raise _refuse("Path is empty")
    if len(key.encode("utf-8")) > KEY_MAX_BYTES:
        raise _refuse(f"Path is longer than {KEY_MAX_BYTES} bytes")
    if _ESCAPE.search(key):
        raise _refuse("Path is percent-encoded twice")
    for seg in key.split("/"):
        _check_segment(seg)
    return key


def file_key(raw: str) -> str:
    """The key an agent asks to read: `a/b.txt` (no leading or trailing slash)."""
    return check_key(decode(raw))


def list_prefix(raw: str) -> str:
    """The directory an agent asks to list: '' (the root) or `a/b` (one trailing '/' is allowed)."""
    text = decode(raw)
    if not text:
        return ""
    return check_key(text[:-1] if text.endswith("/") else text)


def root_prefix(configured: object) -> str:
    """The source's configured prefix as a clean key ('' for the whole bucket/container/directory)."""
    if configured is None:
        return ""
    if not isinstance(configured, str):
        raise InvalidRequest("The source's prefix is invalid", field="config.prefix")
    text = configured.strip("/")
    if not text:
        return ""
    try:
        return check_key(text)
    except InvalidRequest:
        raise InvalidRequest("The source's prefix is invalid", field="config.prefix") from None


def join(root: str, key: str) -> str:
    """Store key for a relative key (either may be ''): `root/key`."""
    if not root:
        return key
    return f"{root}/{key}" if key else root


def relative(root: str, full: str) -> str | None:
    """The relative key of a store key under `root`, or None when it is not below it."""
    if not root:
        return full or None
    head = root + "/"
    return full[len(head):] or None if full.startswith(head) else None

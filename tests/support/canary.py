"""Secret canaries and a scanner that looks for them in every encoding a leak could take (docs/security.md).

    c = new_canary()                       # 'CANARY-<hex>-a/b+c=d"e': '/', '+', '=' and '"' make the
    hits = find(data, [c])                 # percent-encoded and JSON-escaped forms differ from the raw one
    assert hits == []
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
from collections.abc import Iterable
from pathlib import Path


def new_canary(tag: str = "") -> str:
    return f'CANARY-{tag}{secrets.token_hex(12)}-a/b+c=d"e'


def _b64_cores(raw: bytes) -> list[tuple[str, bytes]]:
    """The part of base64(x + raw + y) that depends only on `raw`, for each of the three alignments."""
    out = []
    for offset in range(3):
        for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            encoded = enc(b"\0" * offset + raw)
            start = -(-offset // 3) * 4
            end = ((offset + len(raw)) // 3) * 4
            core = encoded[start:end]
            if len(core) >= 16:
                out.append((f"{name}@{offset}", core))
    return out


def forms(secret: str) -> list[tuple[str, bytes]]:
    """(name, bytes) for every encoding searched: raw, base64 (3 alignments, std and url-safe),
    percent-encoded (upper/lower hex, `+` for space), JSON-escaped (with and without `\\/`), hex."""
    raw = secret.encode()
    quoted = urllib.parse.quote(secret, safe="")
    json_escaped = json.dumps(secret)[1:-1]
    out: list[tuple[str, bytes]] = [
        ("raw", raw),
        ("percent", quoted.encode()),
        ("percent-lower", _lower_escapes(quoted).encode()),
        ("percent-plus", urllib.parse.quote_plus(secret, safe="").encode()),
        ("percent-path", urllib.parse.quote(secret).encode()),  # '/' left as is
        ("percent-path-lower", _lower_escapes(urllib.parse.quote(secret)).encode()),
        ("json", json_escaped.encode()),
        ("json-slash", json_escaped.replace("/", "\\/").encode()),
        ("json-ascii", json.dumps(secret, ensure_ascii=True)[1:-1].encode()),
        ("hex", raw.hex().encode()),
        ("HEX", raw.hex().upper().encode()),
        *_b64_cores(raw),
    ]
    seen: set[bytes] = set()
    unique = []
    for name, data in out:
        if data not in seen:
            seen.add(data)
            unique.append((name, data))
    return unique


def _lower_escapes(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            out.append(text[i:i + 3].lower())
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def find(data: bytes | str, canaries: Iterable[str]) -> list[tuple[str, str]]:
    """(canary, form) for every canary form found in `data`."""
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return [(c, name) for c in canaries for name, form in forms(c) if form in blob]


def find_in_files(paths: Iterable[Path], canaries: list[str]) -> list[tuple[str, str, str]]:
    hits = []
    for p in paths:
        for c, name in find(p.read_bytes(), canaries):
            hits.append((str(p), c, name))
    return hits

"""Defence-in-depth redaction of injected secret values in bytes, text and streams (design rule 7).

Each secret (>= 4 characters) yields variants: raw, percent-encoded (`quote`, `quote_plus`), JSON-escaped
(ASCII-escaped, non-ASCII kept, and with `\\/`), base64 (standard and URL-safe, padded and unpadded);
`add_basic` adds base64 of `user:pass`. Every byte that belongs to an occurrence of any variant is replaced:
overlapping or chained occurrences collapse into one `[REDACTED]`.

Measured (CPython 3.11, dev box): a 1 MiB JSON body in 64 KiB chunks through `stream()`, 3 secrets plus one
Basic pair (15 variants): 1.4 ms with no secret present, 2.5 ms with 16 occurrences spliced in (a single `re`
alternation of the variants took 9.5 ms for the latter).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = b"[REDACTED]"
MIN_SECRET_LEN = 4


def _variants(secret: str) -> set[bytes]:
    sp = "surrogatepass"  # a lone surrogate must not make redaction itself fail
    raw = secret.encode("utf-8", sp)
    out = {raw, quote(secret, safe="", errors=sp).encode(), quote_plus(secret, safe="", errors=sp).encode()}
    for js in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        out.add(js.encode("utf-8", sp))
        out.add(js.replace("/", "\\/").encode("utf-8", sp))
    out |= _b64(raw)
    return out


def _b64(data: bytes) -> set[bytes]:
    out: set[bytes] = set()
    for enc in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        out.add(enc)
        out.add(enc.rstrip(b"="))
    return out


class _Matcher:
    """An immutable variant set (longest first); streams keep the one they started with.

    Occurrences are found with `bytes.find` per variant rather than one regex alternation: CPython's `re` has
    no multi-literal search, and the alternation scanned a 1 MiB body ~4x slower than the finds.
    """

    __slots__ = ("max_len", "probes", "variants")

    def __init__(self, variants: Iterable[bytes]) -> None:
        self.variants = tuple(sorted({v for v in variants if v}, key=lambda v: (-len(v), v)))
        self.max_len = len(self.variants[0]) if self.variants else 0
        # a variant containing another (padded base64 contains unpadded) is present only if that one is
        self.probes = tuple(v for v in self.variants if not any(w in v for w in self.variants if w != v))

    def present(self, data: bytes) -> bool:
        for v in self.probes:  # noqa: SIM110 - a plain loop: no generator per call (twice per request)
            if v in data:
                return True
        return False

    def undecided(self, buf: bytes, start: int) -> int:
        """First position >= start where `buf[j:]` is a proper prefix of a variant (more input may match)."""
        n = len(buf)
        best = n
        for v in self.variants:
            lo = max(start, n - len(v) + 1)
            j = buf.find(v[:1], lo, best)
            while j != -1:
                if v.startswith(buf[j:]):
                    best = j
                    break
                j = buf.find(v[:1], j + 1, best)
        return best

    def scan(self, buf: bytes, cover: int, final: bool) -> tuple[list[bytes], int, int]:
        """Redact `buf` as far as it is decided. Returns (output pieces, hold-from index, open cover).

        `cover`: bytes at the start of `buf` already inside an emitted redaction. A position is decided when
        no variant could still start there given more input; only decided positions are redacted or emitted.
        """
        variants = self.variants
        n = len(buf)
        u = n if final else self.undecided(buf, max(0, n - self.max_len + 1))
        out: list[bytes] = []
        pos = 0
        if cover:
            j, end = self._extend(buf, 0, cover, u)
            if j < end:
                return out, j, end - j
            pos = end
        nxt = [buf.find(v, pos) for v in variants]  # next occurrence of each variant at or after pos
        while True:
            s = min((k for k in nxt if k != -1), default=n)
            if s >= u:
                break
            v = variants[nxt.index(s)]  # the longest variant starting at s
            out.append(buf[pos:s])
            out.append(REDACTED)
            j, end = self._extend(buf, s + 1, s + len(v), u)
            if j < end:
                return out, j, end - j
            pos = end
            nxt = [buf.find(variants[i], pos) if -1 < k < pos else k for i, k in enumerate(nxt)]
        out.append(buf[pos:u])
        return out, u, 0

    def _extend(self, buf: bytes, j: int, end: int, u: int) -> tuple[int, int]:
        """Grow a redacted span [.., end) by occurrences starting in [j, end); stop at undecided position u.

        Returns (first unexamined start, span end); the span is still open when the first is below the end.
        """
        while True:
            lim = min(end, u)
            if j >= lim:
                return j, end
            new_end = end
            for v in self.variants:
                k = buf.rfind(v, j, lim - 1 + len(v))  # last occurrence starting in [j, lim)
                if k != -1 and k + len(v) > new_end:
                    new_end = k + len(v)
            j = lim
            if new_end == end:
                return j, end
            end = new_end


class Redactor:
    """Replaces every variant of the given secrets with `[REDACTED]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._variants: set[bytes] = set()
        for s in secrets:
            if len(s) >= MIN_SECRET_LEN:
                self._variants |= _variants(s)
        self._m = _Matcher(self._variants)

    def add_basic(self, username: str, password: str) -> None:
        """Also redact the HTTP Basic token base64(`username:password`) (standard and URL-safe)."""
        pair = f"{username}:{password}"
        if len(pair) >= MIN_SECRET_LEN:
            self._variants |= _b64(pair.encode("utf-8", "surrogatepass"))
            self._m = _Matcher(self._variants)

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A new redactor for these secrets as well (e.g. the current OAuth access token); self is unchanged."""
        out = Redactor(secrets)
        out._variants |= self._variants
        out._m = _Matcher(out._variants)
        return out

    @property
    def active(self) -> bool:
        return bool(self._m.variants)

    @property
    def max_len(self) -> int:
        return self._m.max_len

    def contains(self, data: bytes) -> bool:
        return self._m.present(data)

    def redact_bytes(self, data: bytes) -> bytes:
        m = self._m
        if not m.variants or not m.present(data):
            return data
        return b"".join(m.scan(data, 0, True)[0])

    def redact_text(self, s: str) -> str:
        if not self.active:
            return s
        data = s.encode("utf-8", "surrogatepass")
        red = self.redact_bytes(data)
        return s if red is data else red.decode("utf-8", "surrogatepass")

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self._m)


class StreamRedactor:
    """Chunk-boundary-safe redaction: concatenated output equals `redact_bytes` of the whole input."""

    __slots__ = ("_buf", "_cover", "_m")

    def __init__(self, matcher: _Matcher) -> None:
        self._m = matcher
        self._buf = b""
        self._cover = 0

    def feed(self, chunk: bytes) -> bytes:
        """Return the output that is final so far; holds back at most `max_len - 1` bytes."""
        m = self._m
        if not m.variants:
            return chunk
        buf = self._buf + chunk if self._buf else chunk
        if not self._cover and not m.present(buf):
            u = m.undecided(buf, max(0, len(buf) - m.max_len + 1))
            self._buf = buf[u:]
            return buf if u == len(buf) else buf[:u]
        out, hold, self._cover = m.scan(buf, self._cover, False)
        self._buf = buf[hold:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Return the held-back tail, redacted. The stream is empty afterwards."""
        buf, cover = self._buf, self._cover
        self._buf, self._cover = b"", 0
        if not buf or not self._m.variants:
            return buf
        return b"".join(self._m.scan(buf, cover, True)[0])

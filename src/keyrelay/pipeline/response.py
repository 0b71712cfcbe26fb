"""Step 9: the response policy: header allowlist, and redaction of echoed secrets in headers and body.

Compressed bodies (docs/security.md, "Echoed secrets are redacted"): when a secret is injected, keyrelay asks the
upstream for `Accept-Encoding: identity` (pipeline/build.py). An upstream that compresses anyway is handled
here, before redaction: one `gzip`, `x-gzip` or `deflate` layer is decoded (zlib, in steps of at most
`DECODE_STEP` bytes, stopped with 502 once the output passes `RATIO_MAX` times the input plus `RATIO_SLACK`) and
passed on decoded, without `Content-Encoding`; any other coding, more than one, or a transfer coding other than
`chunked` is refused with 502 before a byte reaches the agent. Without an injected secret, bodies pass as sent.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

from keyrelay.egress.http1 import Response
from keyrelay.errors import UpstreamUnreachable
from keyrelay.pipeline.headers import response_headers
from keyrelay.pipeline.redact import Redactor

BUFFER_MAX = 256 * 1024  # bodies up to this size with a Content-Length are read whole (one send, exact length)
NO_BODY_STATUSES = frozenset({204, 304})
DECODE_STEP = 64 * 1024  # decoded bytes produced per step: memory stays bounded whatever the ratio
RATIO_MAX = 200  # decoded bytes per compressed byte: JSON ~5-20x, a body of one repeated record ~160x, a bomb ~1000x
RATIO_SLACK = 1024 * 1024
_DECODED = {b"gzip": b"gzip", b"x-gzip": b"gzip", b"deflate": b"deflate"}
_NOT_CODINGS = (b"", b"identity")
# describe the encoded bytes: wrong once the body is decoded
_ENCODED_ONLY = frozenset({b"content-encoding", b"content-length", b"content-md5", b"digest", b"content-digest",
                           b"repr-digest"})


def has_no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200


def wants_buffer(resp: Response) -> bool:
    """Small bodies are read whole; a compressed one streams (its decoded size is not known)."""
    return (resp.content_length is not None and resp.content_length <= BUFFER_MAX
            and not any(name == b"content-encoding" for name, _ in resp.codings))


def _codings(resp: Response) -> tuple[list[bytes], list[bytes]]:
    """(content codings, transfer codings other than chunked), lower case, `identity` left out."""
    content: list[bytes] = []
    transfer: list[bytes] = []
    for low, value in resp.codings:
        if low == b"content-encoding":
            content += [c for c in (t.strip().lower() for t in value.split(b",")) if c not in _NOT_CODINGS]
        else:
            transfer += [c for c in (t.strip().lower() for t in value.split(b","))
                         if c not in _NOT_CODINGS and c != b"chunked"]
    return content, transfer


def check_coding(resp: Response, redactor: Redactor) -> None:
    """Refuse (502) a body that carries an injected secret in a coding keyrelay does not decode: it could hold
    the secret where redaction cannot see it. Call before anything is sent to the agent."""
    if not redactor.active:
        return
    content, transfer = _codings(resp)
    if transfer or len(content) > 1 or (content and content[0] not in _DECODED):
        raise UpstreamUnreachable("The upstream sent a compressed response that keyrelay cannot check for "
                                  "credentials (only one gzip or deflate layer is decoded)")


def decoded_coding(resp: Response, redactor: Redactor) -> bytes | None:
    """`b"gzip"` or `b"deflate"` when keyrelay decodes the body before redaction, else None."""
    if not redactor.active:
        return None
    content, transfer = _codings(resp)
    if transfer or len(content) != 1:
        return None
    return _DECODED.get(content[0])


def headers_for(resp: Response, redactor: Redactor, *, exact_length: bool) -> list[tuple[bytes, bytes]]:
    """Keep the upstream's Content-Length only when the bytes pass unchanged (no redaction possible)."""
    headers = response_headers(resp.raw_headers, redactor=redactor,
                               passthrough_length=exact_length or not redactor.active)
    if not exact_length and decoded_coding(resp, redactor) is not None:
        headers = [h for h in headers if h[0] not in _ENCODED_ONLY]
    return headers


class Inflater:
    """One gzip or deflate layer, decoded in bounded steps (multi-member gzip included)."""

    __slots__ = ("_coding", "_d", "_head", "_in", "_out")

    def __init__(self, coding: bytes) -> None:
        self._coding = coding
        self._d: zlib._Decompress | None = None
        self._head = b""  # deflate: the first bytes, until they tell a zlib stream from a raw one
        self._in = 0
        self._out = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._d is None:
            data = self._head + data
            if self._coding == b"deflate" and len(data) < 2:
                self._head = data
                return
            self._d = zlib.decompressobj(self._wbits(data))
        yield from self._run(data)

    def finish(self) -> Iterator[bytes]:
        if self._d is None and self._head:
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            yield from self._run(self._head)
        if self._d is not None and not self._d.eof:
            tail = self._d.flush()
            if tail:
                yield from self._count(tail)

    def _wbits(self, data: bytes) -> int:
        if self._coding == b"gzip":
            return zlib.MAX_WBITS | 32  # gzip or zlib header, detected
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS  # servers send both as "deflate"

    def _run(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        assert d is not None
        try:
            while data:
                out = d.decompress(data, DECODE_STEP)
                self._in += len(data) - len(d.unconsumed_tail) - len(d.unused_data)  # compressed bytes used
                data = d.unconsumed_tail
                if out:
                    yield from self._count(out)
                if d.eof:
                    rest = d.unused_data
                    if not rest or self._coding != b"gzip":
                        return  # bytes after the end of a deflate stream are ignored
                    d = self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)  # the next gzip member
                    data = rest
        except zlib.error:
            raise UpstreamUnreachable("The upstream sent a corrupt compressed response") from None

    def _count(self, out: bytes) -> Iterator[bytes]:
        """Pass `out` on, unless the output has outgrown the input it came from (`RATIO_MAX`)."""
        self._out += len(out)
        if self._out > RATIO_MAX * self._in + RATIO_SLACK:
            raise UpstreamUnreachable("The upstream's compressed response expands too far to check")
        yield out


async def decode_stream(chunks: AsyncIterator[bytes], coding: bytes) -> AsyncIterator[bytes]:
    """The decoded body, in pieces of at most `DECODE_STEP` bytes (`coding`: from `decoded_coding`)."""
    inflater = Inflater(coding)
    async for chunk in chunks:
        for out in inflater.feed(chunk):
            yield out
    for out in inflater.finish():
        yield out


async def read_whole(resp: Response, redactor: Redactor) -> bytes:
    data = await resp.read()
    coding = decoded_coding(resp, redactor)
    if coding is not None:
        inflater = Inflater(coding)
        data = b"".join([*inflater.feed(data), *inflater.finish()])
    return redactor.redact_bytes(data) if redactor.active else data


async def stream_body(resp: Response, redactor: Redactor) -> AsyncIterator[bytes]:
    """The body as it arrives (decoded first if it must be), redacted chunk-boundary-safely."""
    scrub = redactor.stream() if redactor.active else None
    coding = decoded_coding(resp, redactor)
    chunks = resp.chunks() if coding is None else decode_stream(resp.chunks(), coding)
    async for chunk in chunks:
        out = scrub.feed(chunk) if scrub is not None else chunk
        if out:
            yield out
    if scrub is not None:
        tail = scrub.flush()
        if tail:
            yield tail

"""Step 9: the response policy: header allowlist, and redaction of echoed secrets in headers and body."""

from __future__ import annotations

from collections.abc import AsyncIterator

from keyrelay.egress.http1 import Response
from keyrelay.pipeline.headers import response_headers
from keyrelay.pipeline.redact import Redactor

BUFFER_MAX = 256 * 1024  # bodies up to this size with a Content-Length are read whole (one send, exact length)
NO_BODY_STATUSES = frozenset({204, 304})


def has_no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200


def wants_buffer(resp: Response) -> bool:
    return resp.content_length is not None and resp.content_length <= BUFFER_MAX


def headers_for(resp: Response, redactor: Redactor, *, exact_length: bool) -> list[tuple[bytes, bytes]]:
    """Keep the upstream's Content-Length only when the bytes pass unchanged (no redaction possible)."""
    return response_headers(resp.raw_headers, redactor=redactor,
                            passthrough_length=exact_length or not redactor.active)


async def read_whole(resp: Response, redactor: Redactor) -> bytes:
    data = await resp.read()
    return redactor.redact_bytes(data) if redactor.active else data


async def stream_body(resp: Response, redactor: Redactor) -> AsyncIterator[bytes]:
    """The body as it arrives, redacted chunk-boundary-safely."""
    scrub = redactor.stream() if redactor.active else None
    async for chunk in resp.chunks():
        out = scrub.feed(chunk) if scrub is not None else chunk
        if out:
            yield out
    if scrub is not None:
        tail = scrub.flush()
        if tail:
            yield tail

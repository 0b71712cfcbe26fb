"""Read one file: resolve the range, open a streaming GET, and describe the answer's headers.

The body is streamed in chunks of about `CHUNK` bytes straight from the store to the agent, so memory stays
flat whatever the object size. A ranged read first asks the store for the object's size (HEAD) and then GETs
exactly the resolved bytes: every store then sees one explicit, bounded `Range` (Azure has no suffix ranges).
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keyrelay.files import local, ranges
from keyrelay.files.failures import guarded, guarded_stream
from keyrelay.files.listing import quoted
from keyrelay.files.paths import join
from keyrelay.files.stores import FileSource

if TYPE_CHECKING:
    from obstore import GetOptions

CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(rb"bytes (\d+)-(\d+)/(\d+)")
GENERIC_TYPES = frozenset({"", "binary/octet-stream", "application/octet-stream"})


@dataclass
class Opened:
    """A file on its way to the agent: status, headers, and (unless HEAD) the byte stream."""

    status: int
    headers: list[tuple[bytes, bytes]]
    length: int
    body: AsyncIterator[bytes] | None


def content_range(value: bytes | None) -> tuple[int, int] | None:
    """(first byte, object size) of a `Content-Range: bytes a-b/size` header we wrote."""
    match = _CONTENT_RANGE.fullmatch(value or b"")
    return None if match is None else (int(match.group(1)), int(match.group(3)))


def content_type(key: str, stored: object) -> str:
    """The store's own content type when it is specific; else a guess from the name; else octet-stream."""
    if isinstance(stored, str) and stored.strip().lower() not in GENERIC_TYPES and stored.isprintable():
        return stored.strip()
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"


def _headers(key: str, meta: Mapping[str, Any], attributes: Mapping[str, Any], span: ranges.Span | None,
             length: int) -> list[tuple[bytes, bytes]]:
    name = key.rsplit("/", 1)[-1]
    out = [
        (b"content-type", content_type(key, attributes.get("Content-Type")).encode("latin-1", "replace")),
        (b"content-length", str(length).encode()),
        (b"accept-ranges", b"bytes"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}".encode()),
    ]
    etag = quoted(meta.get("e_tag"))
    if etag and etag.isascii() and etag.isprintable():
        out.append((b"etag", etag.encode()))
    modified = meta.get("last_modified")
    if isinstance(modified, datetime):
        out.append((b"last-modified", format_datetime(modified, usegmt=True).encode()))
    if span is not None:
        out.append((b"content-range", span.content_range().encode()))
    return out


async def open_file(fs: FileSource, key: str, *, range_header: str | None, max_span: int,
                    head_only: bool = False) -> Opened:
    """Open `key` (relative to the source root) for streaming; raises KeyrelayError (404, 416, 502, ...)."""
    spec = ranges.parse(range_header)
    if fs.local_dir is not None:
        await asyncio.to_thread(local.check_file, fs.local_dir, key)
    full = join(fs.root, key)
    import obstore  # on first use: a worker that serves no file never loads the object stores

    span: ranges.Span | None = None
    if spec is not None or head_only:
        meta = await guarded(obstore.head_async(fs.store, full))
        if spec is not None:
            span = ranges.resolve(spec, int(meta["size"]), max_span)
        if head_only:
            length = span.length if span else int(meta["size"])
            return Opened(206 if span else 200, _headers(key, meta, {}, span, length), length, None)
    options: GetOptions | None = {"range": (span.start, span.end)} if span is not None else None
    result = await guarded(obstore.get_async(fs.store, full, options=options))
    meta = result.meta
    if span is None:
        length = int(meta["size"])
    else:
        start, end = result.range
        if (start, end) != (span.start, span.end):  # the object changed between HEAD and GET
            span = ranges.Span(start, end, int(meta["size"]))
        length = span.length
    headers = _headers(key, meta, result.attributes, span, length)
    return Opened(206 if span else 200, headers, length, _chunks(result))


async def _chunks(result: Any) -> AsyncIterator[bytes]:
    async for chunk in guarded_stream(aiter(result.stream(min_chunk_size=CHUNK))):
        yield bytes(chunk)

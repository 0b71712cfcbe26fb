"""File sources as a service: list a prefix, read a file (streamed, or whole up to a cap). Both file doors use it
(the HTTP routes in `doors/files.py` and the MCP tools); the pipeline admits each call (`files` scope, file
source kind, rate limits), holds a workspace slot while it runs and records it once.

Paths arrive as the agent sent them: still percent-encoded from an HTTP path (`raw=True`), or as plain text
from MCP arguments; either way `files/paths.py` confines them to the source's root.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from keyrelay.errors import KeyrelayError
from keyrelay.files import listing, paths, reading
from keyrelay.files.ranges import Unsatisfiable
from keyrelay.files.stores import StoreFactory
from keyrelay.model import ById, Door, Inbound, Scope
from keyrelay.pipeline.policy import FILE_CONNECTOR_KINDS
from keyrelay.pipeline.relay import Exchange, Relay, Relayed, Reply


@dataclass(frozen=True, slots=True)
class FileRequest:
    """Who asks for which source's files, through which door."""

    door: Door
    method: str
    path: str  # for the request log
    authorization: str | None
    source_id: str

    def inbound(self) -> Inbound:
        return Inbound(door=self.door, method=self.method, path=self.path, authorization=self.authorization,
                       source=ById(self.source_id), scope=Scope.FILES)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Part of a file read whole (MCP): the bytes and where they lie in the object."""

    key: str
    data: bytes
    start: int
    size: int  # of the whole object
    content_type: str


class FileService:
    def __init__(self, relay: Relay, stores: StoreFactory, *, max_range_bytes: int) -> None:
        self._relay, self._stores, self._max_range = relay, stores, max_range_bytes

    async def refuse(self, req: FileRequest, error: KeyrelayError) -> None:
        """Refuse a request the door cannot serve, after the pipeline authenticated it (and record it)."""
        await self._relay.handle(req.inbound(), kinds=FILE_CONNECTOR_KINDS, work=lambda _ex: _refused(error))

    async def list(self, req: FileRequest, prefix: str, *, raw: bool, page_token: str | None,
                   limit: int) -> Relayed:
        """One page of `{files, next_page_token}` as the answer's `value`."""

        async def work(ex: Exchange) -> Reply:
            key = paths.list_prefix(prefix) if raw else (paths.check_key(prefix.removesuffix("/")) if prefix else "")
            fs = await self._stores.open(ex.source, ex.credentials)
            page = await listing.list_page(fs, source_id=ex.source.id, prefix=key, token=page_token, limit=limit)
            value: dict[str, Any] = {"files": [e.view() for e in page.files],
                                     "next_page_token": page.next_page_token}
            ex.bytes_out = len(json.dumps(value, separators=(",", ":")))
            return Reply(value=value)

        return await self._relay.handle(req.inbound(), kinds=FILE_CONNECTOR_KINDS, work=work)

    async def read(self, req: FileRequest, path: str, *, range_header: str | None, head_only: bool) -> Relayed:
        """A file as a byte stream (HTTP): status 200/206, its headers, and the bytes (none for HEAD)."""

        async def work(ex: Exchange) -> Reply:
            key = paths.file_key(path)
            fs = await self._stores.open(ex.source, ex.credentials)
            opened = await reading.open_file(fs, key, range_header=range_header, max_span=self._max_range,
                                             head_only=head_only)
            return Reply(status=opened.status, headers=opened.headers, stream=opened.body or _empty())

        return await self._relay.handle(req.inbound(), kinds=FILE_CONNECTOR_KINDS, work=work, bounded=False)

    async def read_whole(self, req: FileRequest, path: str, *, range_header: str | None, cap: int) -> Relayed:
        """At most `cap` bytes of a file (MCP), as a `Chunk` in the answer's `value`."""

        async def work(ex: Exchange) -> Reply:
            key = paths.check_key(path)
            cap_ = min(cap, self._max_range)
            fs = await self._stores.open(ex.source, ex.credentials)
            try:
                opened = await reading.open_file(fs, key, range_header=range_header or f"bytes=0-{cap_ - 1}",
                                                 max_span=cap_)
            except Unsatisfiable as err:
                if range_header or err.size != 0:
                    raise
                opened = await reading.open_file(fs, key, range_header=None, max_span=cap_)  # an empty file
            data = await _read(opened.body, cap_)
            ex.bytes_out = len(data)
            headers = dict(opened.headers)
            start, size = 0, len(data)
            span = reading.content_range(headers.get(b"content-range"))
            if span is not None:
                start, size = span
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            return Reply(status=opened.status, value=Chunk(key, data, start, size, content_type))

        return await self._relay.handle(req.inbound(), kinds=FILE_CONNECTOR_KINDS, work=work)


async def _refused(error: KeyrelayError) -> Reply:
    raise error


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _read(body: AsyncIterator[bytes] | None, cap: int) -> bytes:
    if body is None:
        return b""
    parts, size = [], 0
    try:
        async for chunk in body:
            parts.append(chunk[: cap - size])
            size += len(parts[-1])
            if size >= cap:
                break
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return b"".join(parts)

"""The MCP file tools: `files_list` and `files_get` on top of `keyrelay.files` (the same functions as the
file routes), admitted by the shared pipeline with the `files` scope and recorded once with door `mcp`.

MCP results are held in memory, so `files_get` returns at most `max_bytes` (default 1 MiB, at most 8 MiB)
per call, as text when the bytes are UTF-8 and as base64 otherwise, and says where to continue.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from keyrelay.doors.render import dumps
from keyrelay.errors import KeyrelayError
from keyrelay.files import listing, paths, reading
from keyrelay.files.ranges import Unsatisfiable
from keyrelay.files.stores import FileSource, StoreFactory
from keyrelay.model import Door, Inbound, Scope
from keyrelay.pipeline.policy import FILE_CONNECTOR_KINDS
from keyrelay.pipeline.record import Recorder
from keyrelay.pipeline.relay import Relay

GET_DEFAULT = 1024 * 1024
GET_MAX = 8 * 1024 * 1024
_CONTENT_RANGE = re.compile(rb"bytes (\d+)-(\d+)/(\d+)")
_ID = {"type": "string", "minLength": 1, "maxLength": 64, "description": "The id of a file source."}

LIST_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["source_id"],
                               "properties": {
    "source_id": _ID,
    "prefix": {"type": "string", "maxLength": 1024, "default": "",
               "description": "Directory to list, relative to the source root, e.g. 'reports/2024'; '' = root."},
    "page_token": {"type": ["string", "null"], "maxLength": listing.TOKEN_MAX},
    "limit": {"type": "integer", "minimum": 1, "maximum": listing.LIMIT_MAX, "default": listing.LIMIT_DEFAULT}}}
GET_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["source_id", "path"],
                              "properties": {
    "source_id": _ID,
    "path": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "File path, e.g. 'a/b.csv'."},
    "range": {"type": "string", "maxLength": 64, "description": "Byte range: bytes=a-b, bytes=a- or bytes=-n."},
    "max_bytes": {"type": "integer", "minimum": 1, "maximum": GET_MAX, "default": GET_DEFAULT},
    "encoding": {"enum": ["auto", "text", "base64"], "default": "auto"}}}


@contextlib.asynccontextmanager
async def _opened(relay: Relay, stores: StoreFactory, authorization: str | None, source_id: str,
                  tool: str) -> AsyncIterator[tuple[FileSource, Recorder]]:
    """Admit (auth, `files` scope, kind, rate limit), take a workspace slot, open the store; record once."""
    inbound = Inbound(door=Door.MCP, method="GET", path=f"/mcp/{tool}", authorization=authorization,
                      source_id=source_id, scope=Scope.FILES)
    admitted = await relay.admit(inbound, kinds=FILE_CONNECTOR_KINDS)  # records its own refusals
    rec, source = admitted.recorder, admitted.resolved.source
    status, error = 500, None
    try:
        release = relay.enter_workspace(source.workspace_id)
        try:
            yield await stores.open(source, admitted.resolved.credentials), rec
        finally:
            release()
        status = 200
    except KeyrelayError as err:
        status, error = err.status, err
        raise
    finally:
        rec.done(status, error)


async def list_files(relay: Relay, stores: StoreFactory, authorization: str | None,
                     args: dict[str, Any]) -> dict[str, Any]:
    async with _opened(relay, stores, authorization, args["source_id"], "files_list") as (fs, rec):
        prefix = str(args.get("prefix") or "").removesuffix("/")
        page = await listing.list_page(fs, source_id=args["source_id"], prefix=paths.check_key(prefix) if prefix
                                       else "", token=args.get("page_token"),
                                       limit=args.get("limit", listing.LIMIT_DEFAULT))
        out = {"files": [e.view() for e in page.files], "next_page_token": page.next_page_token}
        rec.bytes_out = len(dumps(out))
        return out


async def get_file(relay: Relay, stores: StoreFactory, authorization: str | None, args: dict[str, Any], *,
                   max_range_bytes: int) -> dict[str, Any]:
    async with _opened(relay, stores, authorization, args["source_id"], "files_get") as (fs, rec):
        key = paths.check_key(args["path"])
        cap = min(int(args.get("max_bytes", GET_DEFAULT)), max_range_bytes)
        asked = args.get("range")
        try:
            opened = await reading.open_file(fs, key, range_header=asked or f"bytes=0-{cap - 1}", max_span=cap)
        except Unsatisfiable as err:
            if asked or err.size != 0:
                raise
            opened = await reading.open_file(fs, key, range_header=None, max_span=cap)  # an empty file
        data = await _read(opened.body, cap)
        rec.bytes_out = len(data)
        headers = dict(opened.headers)
        start, size = 0, len(data)
        match = _CONTENT_RANGE.fullmatch(headers.get(b"content-range", b""))
        if match is not None:
            start, size = int(match.group(1)), int(match.group(3))
        encoding, content, used = _encode(data, args.get("encoding", "auto"), cut_ok=start + len(data) < size)
        end = start + used  # exclusive
        return {"path": key, "content_type": headers.get(b"content-type", b"").decode("latin-1"), "size": size,
                "range": {"start": start, "end": end - 1} if used else None, "truncated": end < size,
                "next_range": f"bytes={end}-" if end < size else None, "encoding": encoding, "content": content}


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
            await aclose()
    return b"".join(parts)


def _encode(data: bytes, wanted: str, *, cut_ok: bool) -> tuple[str, str, int]:
    """(encoding, content, bytes used): text when asked or when the bytes are UTF-8, else base64."""
    if wanted == "text":
        return "text", data.decode("utf-8", errors="replace"), len(data)
    if wanted == "auto":
        for cut in range(4 if cut_ok else 1):  # a multi-byte character may straddle the end of a partial read
            with contextlib.suppress(UnicodeDecodeError):
                return "text", data[: len(data) - cut].decode("utf-8"), len(data) - cut
    return "base64", base64.b64encode(data).decode(), len(data)

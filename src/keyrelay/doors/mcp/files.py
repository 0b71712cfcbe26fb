"""The MCP file tools: `files_list` and `files_get` on the file service the HTTP file routes use
(`files/service.py`): admitted by the pipeline with the `files` scope and recorded once with door `mcp`.

MCP results are held in memory, so `files_get` returns at most `max_bytes` (default 1 MiB, at most 8 MiB)
per call, as text when the bytes are UTF-8 and as base64 otherwise, and says where to continue.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from keyrelay.files import listing
from keyrelay.files.service import Chunk, FileRequest, FileService
from keyrelay.model import Door

GET_DEFAULT = 1024 * 1024
GET_MAX = 8 * 1024 * 1024
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


def _request(authorization: str | None, source_id: str, tool: str) -> FileRequest:
    return FileRequest(door=Door.MCP, method="GET", path=f"/mcp/{tool}", authorization=authorization,
                       source_id=source_id)


async def list_files(files: FileService, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    page = await files.list(_request(authorization, args["source_id"], "files_list"), str(args.get("prefix") or ""),
                            raw=False, page_token=args.get("page_token"),
                            limit=args.get("limit", listing.LIMIT_DEFAULT))
    out: dict[str, Any] = page.value
    return out


async def get_file(files: FileService, authorization: str | None, args: dict[str, Any]) -> dict[str, Any]:
    got = await files.read_whole(_request(authorization, args["source_id"], "files_get"), args["path"],
                                 range_header=args.get("range"), cap=int(args.get("max_bytes", GET_DEFAULT)))
    chunk: Chunk = got.value
    encoding, content, used = _encode(chunk.data, args.get("encoding", "auto"),
                                      cut_ok=chunk.start + len(chunk.data) < chunk.size)
    end = chunk.start + used  # exclusive
    return {"path": chunk.key, "content_type": chunk.content_type, "size": chunk.size,
            "range": {"start": chunk.start, "end": end - 1} if used else None, "truncated": end < chunk.size,
            "next_range": f"bytes={end}-" if end < chunk.size else None, "encoding": encoding, "content": content}


def _encode(data: bytes, wanted: str, *, cut_ok: bool) -> tuple[str, str, int]:
    """(encoding, content, bytes used): text when asked or when the bytes are UTF-8, else base64."""
    if wanted == "text":
        return "text", data.decode("utf-8", errors="replace"), len(data)
    if wanted == "auto":
        for cut in range(4 if cut_ok else 1):  # a multi-byte character may straddle the end of a partial read
            with contextlib.suppress(UnicodeDecodeError):
                return "text", data[: len(data) - cut].decode("utf-8"), len(data) - cut
    return "base64", base64.b64encode(data).decode(), len(data)

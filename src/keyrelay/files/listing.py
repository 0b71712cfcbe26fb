"""List the files below a prefix, one page at a time.

Semantics (the same for every store): the prefix names a *directory* (path segments, as obstore defines it:
`docs` lists `docs/a.txt` and `docs/sub/b.txt`, never `docsX/c.txt`); the listing is recursive and sorted by
key; paths in the answer are relative to the source's root, so they can be passed straight to `get`.

Page tokens use offset semantics: a token carries the last key of the previous page, and the next page starts
after it. It is opaque to the agent (base64url JSON) but not a secret and grants nothing: it is bound to the
source id and the prefix (a token from another listing is a 400), and its key must lie below the prefix.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from keyrelay import boundedjson
from keyrelay.errors import InvalidRequest
from keyrelay.files import local
from keyrelay.files.failures import guarded
from keyrelay.files.paths import check_key, join, relative
from keyrelay.files.stores import FileSource

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
TOKEN_MAX = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    size: int
    last_modified: dt.datetime
    etag: str | None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size,
                               "last_modified": self.last_modified.astimezone(dt.UTC).isoformat()
                               .replace("+00:00", "Z")}
        if self.etag:
            out["etag"] = self.etag
        return out


@dataclass(frozen=True, slots=True)
class Page:
    files: list[Entry]
    next_page_token: str | None


def quoted(etag: object) -> str | None:
    """ETags as HTTP sends them: quoted (Azure and GCS list them bare)."""
    if not isinstance(etag, str) or not etag:
        return None
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def encode_token(source_id: str, prefix: str, last: str) -> str:
    raw = json.dumps({"v": 1, "s": source_id, "p": prefix, "k": last}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str, source_id: str, prefix: str) -> str:
    """The key a page token continues after; 400 when it is malformed or from another listing."""
    bad = InvalidRequest("page_token is invalid or belongs to another listing", field="page_token")
    if len(token) > TOKEN_MAX:
        raise bad
    try:
        data = boundedjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("s") != source_id or data.get("p") != prefix:
        raise bad
    key = data.get("k")
    if not isinstance(key, str) or (prefix and not key.startswith(prefix + "/")):
        raise bad
    try:
        return check_key(key)
    except InvalidRequest:
        raise bad from None


def _listable(key: str) -> bool:
    try:
        check_key(key)
    except InvalidRequest:
        return False
    return True


async def _store_page(fs: FileSource, prefix: str, after: str | None, limit: int) -> tuple[list[Entry], bool]:
    store_prefix = join(fs.root, prefix) or None
    offset = join(fs.root, after) if after else None
    import obstore  # on first use: a worker that serves no file never loads the object stores

    stream = obstore.list(fs.store, prefix=store_prefix, offset=offset, chunk_size=min(limit + 1, LIMIT_MAX))
    found: list[Entry] = []
    while True:
        batch = await guarded(_next(stream))
        if batch is None:
            return found, False
        for meta in batch:
            key = relative(fs.root, meta["path"])
            if key is None or (after is not None and key <= after) or not _listable(key):
                continue  # some emulators ignore start-after; keys an agent could not `get` are not shown
            if len(found) == limit:
                return found, True
            found.append(Entry(key, int(meta["size"]), meta["last_modified"], quoted(meta.get("e_tag"))))


async def _next(stream: Any) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _local_page(fs: FileSource, prefix: str, after: str | None, limit: int) -> tuple[list[Entry], bool]:
    assert fs.local_dir is not None
    found: list[Entry] = []
    for item in local.walk(fs.local_dir, prefix, after):
        if len(found) == limit:
            return found, True
        modified = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, tz=dt.UTC)
        found.append(Entry(item.key, item.size, modified, item.etag))
    return found, False


async def list_page(fs: FileSource, *, source_id: str, prefix: str, token: str | None, limit: int) -> Page:
    after = decode_token(token, source_id, prefix) if token else None
    if fs.local_dir is not None:
        found, more = await asyncio.to_thread(_local_page, fs, prefix, after, limit)
    else:
        found, more = await _store_page(fs, prefix, after, limit)
    next_token = encode_token(source_id, prefix, found[-1].path) if more and found else None
    return Page(found, next_token)

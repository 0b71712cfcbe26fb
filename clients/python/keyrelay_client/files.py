"""File sources (S3, GCS, Azure Blob, local directories; docs/files.md): list, read, download.

* `list(source, prefix)` pages through `GET /api/v1/sonar/files/{source_id}/list/{prefix}`.
* `read(source, path, range=(first, last))` returns the bytes (one `Range: bytes=first-last`, both inclusive;
  `last=None` reads to the end).
* `download(source, path, dest, progress=)` streams to a temporary file beside `dest` and renames it into place
  once every byte arrived, so `dest` is never left half written. `progress(done, total)` is called after each
  chunk (`total` from `Content-Length`, or None). Chunks are written with plain file writes, also under
  `AsyncKeyrelay` (each is one network read, a few KiB).

Paths are relative to the source's root, `/`-separated; each segment is percent-encoded here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from keyrelay_client.admin import SourceRef, source_id
from keyrelay_client.calls import Call, Operation, file_path, obj, path
from keyrelay_client.errors import UnexpectedResponse, UsageError
from keyrelay_client.models import FileInfo, Page
from keyrelay_client.surface import AsyncResource, SyncResource, apaged, awaiting, blocking, paged

Progress = Callable[[int, int | None], None]


def _route(sid: str, action: str, target: str) -> str:
    return path("api", "v1", "sonar", "files", sid, action) + "/" + file_path(target.lstrip("/"))


def _range(value: tuple[int, int | None] | None) -> dict[str, str]:
    if value is None:
        return {}
    first, last = value
    if first < 0 or (last is not None and last < first):
        raise UsageError("range must be (first, last) with 0 <= first <= last, or (first, None)")
    return {"Range": f"bytes={first}-{'' if last is None else last}"}


@dataclass(frozen=True)
class FilePager:
    source_id: str
    prefix: str
    limit: int | None

    def page(self, position: Any) -> Operation[Page[FileInfo]]:
        params: dict[str, str | int] = {}
        if position is not None:
            params["page_token"] = position
        if self.limit is not None:
            params["limit"] = self.limit
        found = obj((yield Call("GET", _route(self.source_id, "list", self.prefix), params=params or None)))
        listed, token = found.get("files"), found.get("next_page_token")
        if not isinstance(listed, list) or not (token is None or isinstance(token, str)):
            raise UnexpectedResponse("The file listing has no files list")
        return Page(items=[FileInfo.from_json(f) for f in listed], next=token or None)


@dataclass
class FileSink:
    """Writes a streamed body to a temporary file beside `dest`; renames it to `dest` only when complete."""

    dest: Path
    progress: Progress | None = None
    done: int = 0
    _file: IO[bytes] | None = field(default=None, repr=False)
    _total: int | None = None

    def open(self, response: httpx.Response) -> None:
        length = response.headers.get("content-length", "")
        self._total = int(length) if length.isdigit() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=".part", dir=self.dest.parent)
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self.done += len(chunk)
        if self.progress is not None:
            self.progress(self.done, self._total)

    def close(self, *, complete: bool) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if complete and (self._total is None or self.done == self._total):
            os.replace(self._tmp, self.dest)
            return
        self._tmp.unlink(missing_ok=True)
        if complete:
            raise UnexpectedResponse(f"The download ended after {self.done} of {self._total} bytes")


class FileOps:
    def read(self, source: SourceRef, file: str, *,
             range: tuple[int, int | None] | None = None) -> Operation[bytes]:
        """The bytes of `file` (a path below the source's root), or of one byte range of it."""
        response = yield Call("GET", _route(source_id(source), "get", file), headers=_range(range))
        return response.content

    def download(self, source: SourceRef, file: str, dest: str | os.PathLike[str], *,
                 progress: Progress | None = None) -> Operation[Path]:
        """Stream `file` into `dest` (a file path, or an existing directory to keep the file's name in)."""
        target = Path(dest)
        if target.is_dir():
            target = target / file.rstrip("/").rsplit("/", 1)[-1]
        sink = FileSink(target, progress)
        yield Call("GET", _route(source_id(source), "get", file), sink=sink)
        return target

    def list(self, source: SourceRef, prefix: str = "", *, page_size: int | None = None) -> FilePager:
        """Every file under `prefix` (all of them for ""), across pages of `page_size` (server default 100)."""
        return FilePager(source_id(source), prefix, page_size)


class Files(SyncResource):
    list = paged(FileOps.list)
    read = blocking(FileOps.read)
    download = blocking(FileOps.download)


class AsyncFiles(AsyncResource):
    list = apaged(FileOps.list)
    read = awaiting(FileOps.read)
    download = awaiting(FileOps.download)

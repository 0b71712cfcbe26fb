"""The file service (files/service.py) on the real pipeline and a local file source: every call is admitted
(`files` scope, file sources only), recorded once, and confined to the source's root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyrelay.errors import Forbidden, InvalidRequest, RangeNotSatisfiable, WrongSourceType
from keyrelay.files.service import Chunk, FileRequest, FileService
from keyrelay.files.stores import StoreFactory
from keyrelay.model import Door, Scope, Source
from support.pipeline import LOOPBACK, Pipeline, assembled

TEXT = b"0123456789" * 10


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, FileService, Source]]:
    root = tmp_path / "files"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_bytes(TEXT)
    (root / "b.bin").write_bytes(b"\x00\xff")
    (tmp_path / "outside.txt").write_text("not yours")
    async with assembled(tmp_path) as p:
        p.sources.local_roots = (root.resolve(),)
        src = await p.source("", connector="local", slug="docs", config={"root": str(root)})
        yield p, FileService(p.relay, StoreFactory(allow=LOOPBACK, local_roots=(root,)), max_range_bytes=50), src


def _req(p: Pipeline, src: Source, authorization: str | None = None) -> FileRequest:
    return FileRequest(door=Door.FILES, method="GET", path="/files/x", authorization=authorization or p.auth,
                       source_id=src.id)


async def test_a_listing_is_one_logged_answer(env: tuple[Pipeline, FileService, Source]) -> None:
    p, files, src = env
    out = await files.list(_req(p, src), "", raw=False, page_token=None, limit=10)
    assert [f["path"] for f in out.value["files"]] == ["b.bin", "notes/a.txt"]
    [entry] = p.log.entries
    assert entry.status == 200 and entry.door == "files" and entry.bytes_out > 0


async def test_a_read_streams_the_range_and_is_logged_when_it_ends(env: tuple[Pipeline, FileService, Source]) -> None:
    p, files, src = env
    out = await files.read(_req(p, src), "notes/a.txt", range_header="bytes=5-14", head_only=False)
    assert out.status == 206 and out.streaming and p.log.entries == []
    body = b"".join([c async for c in out.chunks()])
    assert body == TEXT[5:15]
    [entry] = p.log.entries
    assert (entry.status, entry.bytes_out) == (206, 10)


async def test_a_whole_read_is_capped_by_the_service(env: tuple[Pipeline, FileService, Source]) -> None:
    p, files, src = env
    out = await files.read_whole(_req(p, src), "notes/a.txt", range_header=None, cap=1000)
    chunk: Chunk = out.value
    assert (chunk.data, chunk.start, chunk.size) == (TEXT[:50], 0, 100)  # max_range_bytes=50 wins over the cap
    with pytest.raises(RangeNotSatisfiable):
        await files.read_whole(_req(p, src), "notes/a.txt", range_header="bytes=200-", cap=10)
    assert [e.status for e in p.log.entries] == [206, 416]


@pytest.mark.parametrize("path", ["../outside.txt", "notes/../../outside.txt", "/etc/passwd", "notes\\a.txt"])
async def test_paths_outside_the_root_are_refused_and_logged(env: tuple[Pipeline, FileService, Source],
                                                             path: str) -> None:
    p, files, src = env
    with pytest.raises(InvalidRequest):
        await files.read_whole(_req(p, src), path, range_header=None, cap=100)
    assert [e.status for e in p.log.entries] == [400]


async def test_the_files_scope_and_a_file_source_are_required(env: tuple[Pipeline, FileService, Source]) -> None:
    p, files, src = env
    proxy_only = await p.api_key(frozenset({Scope.PROXY}))
    with pytest.raises(Forbidden):
        await files.list(_req(p, src, f"Bearer {proxy_only}"), "", raw=False, page_token=None, limit=10)
    api = await p.source("http://127.0.0.1:9", slug="api")
    with pytest.raises(WrongSourceType):
        await files.list(_req(p, api), "", raw=False, page_token=None, limit=10)
    assert [e.status for e in p.log.entries] == [403, 400]


async def test_refuse_records_the_doors_refusal_once(env: tuple[Pipeline, FileService, Source]) -> None:
    p, files, src = env
    with pytest.raises(InvalidRequest):
        await files.refuse(_req(p, src), InvalidRequest("Unsupported method"))
    [entry] = p.log.entries
    assert (entry.status, entry.error_message) == (400, "Unsupported method")

"""Step 4 (pipeline/resolve.py): find a source and open its credentials, with a short single-flight cache, on
the real stores and vault (SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keyrelay.errors import NotFound, Sealed
from keyrelay.manage.destinations import Destinations
from keyrelay.model import Source
from keyrelay.pipeline.resolve import SourceResolver
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.vault import KeyVault, new_key
from support.pipeline import ADMIN, Pipeline, assembled
from support.secrets import revealed

TOKEN = "tok-1f2e3d"


class CountingStore(SqlSourceStore):
    """The real store, counting its source lookups."""

    loads = 0

    async def get_source_by_slug(self, workspace_id: str, slug: str) -> Source | None:
        self.loads += 1
        await asyncio.sleep(0)  # let concurrent callers pile up behind the first
        return await super().get_source_by_slug(workspace_id, slug)


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe


def _resolver(p: Pipeline, *, cache_seconds: float = 1.0) -> tuple[SourceResolver, CountingStore]:
    store = CountingStore(p.engine)
    return SourceResolver(store, p.vault, p.clock, cache_seconds=cache_seconds,
                          destination_of=Destinations(p.catalog)), store


async def _source(p: Pipeline, **kw: Any) -> Source:
    return await p.source("http://127.0.0.1:9", credentials={"bearer_token": TOKEN}, **kw)


async def test_a_source_is_found_by_slug_and_by_id_with_its_credentials_open(p: Pipeline) -> None:
    src = await _source(p)
    resolver, _ = _resolver(p)
    by_slug = await resolver.by_slug(p.workspace_id, "echo")
    by_id = await resolver.by_id(src.id)
    assert by_slug.source.id == by_id.source.id == src.id
    assert revealed(by_slug.credentials.fields) == {"bearer_token": TOKEN}
    assert TOKEN not in repr(by_slug)


@pytest.mark.parametrize("how", ["unknown slug", "unknown id", "other workspace", "inactive"])
async def test_what_cannot_be_used_is_not_found(p: Pipeline, how: str) -> None:
    src = await _source(p)
    resolver, _ = _resolver(p)
    if how == "inactive":
        await p.sources.update_source(ADMIN, src.id, {"status": "inactive"})
    with pytest.raises(NotFound):
        if how == "unknown id":
            await resolver.by_id("nope")
        elif how == "other workspace":
            await resolver.by_slug("another-workspace", "echo")
        else:
            await resolver.by_slug(p.workspace_id, "nope" if how == "unknown slug" else "echo")


async def test_a_fresh_resolution_is_reused_until_the_cache_time_passes(p: Pipeline) -> None:
    src = await _source(p)
    resolver, store = _resolver(p, cache_seconds=1.0)
    assert resolver.cached_slug(p.workspace_id, "echo") is None
    first = await resolver.by_slug(p.workspace_id, "echo")
    assert resolver.cached_slug(p.workspace_id, "echo") is first
    await p.sources.delete_source(ADMIN, src.id)  # elsewhere: this resolver is not told
    p.clock.advance(0.9)
    assert await resolver.by_slug(p.workspace_id, "echo") is first and store.loads == 1
    p.clock.advance(0.2)  # the cache time bounds how long a deletion takes to reach every instance
    assert resolver.cached_slug(p.workspace_id, "echo") is None
    with pytest.raises(NotFound):
        await resolver.by_slug(p.workspace_id, "echo")


async def test_forget_drops_every_cached_entry_at_once(p: Pipeline) -> None:
    src = await _source(p)
    resolver, _ = _resolver(p, cache_seconds=60)
    await resolver.by_slug(p.workspace_id, "echo")
    await p.sources.update_source(ADMIN, src.id, {"slug": "renamed"})
    resolver.forget(src.id)
    with pytest.raises(NotFound):  # the old slug must not stay routable
        await resolver.by_slug(p.workspace_id, "echo")
    assert (await resolver.by_slug(p.workspace_id, "renamed")).source.id == src.id


async def test_concurrent_misses_share_one_load(p: Pipeline) -> None:
    await _source(p)
    resolver, store = _resolver(p)
    got = await asyncio.gather(*(resolver.by_slug(p.workspace_id, "echo") for _ in range(20)))
    assert store.loads == 1 and len({id(r) for r in got}) == 1


async def test_a_sealed_vault_refuses_to_open_credentials(p: Pipeline) -> None:
    await _source(p)
    sealed = KeyVault(SqlKeyRingStore(p.engine), new_key(), clock=p.clock)  # the wrong master key
    await sealed.load(may_create=False)
    resolver = SourceResolver(SqlSourceStore(p.engine), sealed, p.clock, cache_seconds=1,
                              destination_of=Destinations(p.catalog))
    with pytest.raises(Sealed):
        await resolver.by_slug(p.workspace_id, "echo")

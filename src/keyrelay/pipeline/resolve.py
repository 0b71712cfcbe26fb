"""Step 4: find the source an agent names and open its credentials, with a short cache.

The cache (default 1 s) bounds how long a policy change or deletion takes to reach every instance; local
changes invalidate at once. Decrypted credentials live only in this process's memory, and only open for the
destination the source's current config names (docs/security.md: encryption at rest).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keyrelay.errors import NotFound
from keyrelay.model import Credentials, Source
from keyrelay.pipeline.cache import SingleFlightCache
from keyrelay.ports import Clock, DestinationOf, SourceStore, Vault

_MAX = 50_000


@dataclass(frozen=True, slots=True)
class Resolved:
    source: Source
    credentials: Credentials


class SourceResolver:
    def __init__(self, store: SourceStore, vault: Vault, clock: Clock, *, cache_seconds: float,
                 destination_of: DestinationOf) -> None:
        self._store = store
        self._vault = vault
        self._destination_of = destination_of
        self._clock = clock
        self._cache: SingleFlightCache[tuple[str, str], Resolved] = SingleFlightCache(
            clock, ttl=cache_seconds, max_entries=_MAX)

    def forget(self, source_id: str) -> None:
        """Drop cached entries (all of them: a slug change must not leave the old slug routable)."""
        self._cache.clear()

    def cached_slug(self, workspace_id: str, slug: str) -> Resolved | None:
        """The cached resolution, if fresh (no await: the hot path's common case)."""
        return self._cache.peek(("slug", f"{workspace_id}/{slug}"))

    async def by_slug(self, workspace_id: str, slug: str) -> Resolved:
        return await self._get(("slug", f"{workspace_id}/{slug}"),
                               lambda: self._store.get_source_by_slug(workspace_id, slug))

    async def by_id(self, source_id: str) -> Resolved:
        return await self._get(("id", source_id), lambda: self._store.get_source(source_id))

    async def _get(self, key: tuple[str, str], load: Callable[[], Awaitable[Source | None]]) -> Resolved:
        return await self._cache.get(key, lambda: self._resolve(load))

    async def _resolve(self, load: Callable[[], Awaitable[Source | None]]) -> Resolved:
        source = await load()
        if source is None or not source.active:
            raise NotFound("Source not found")
        sealed = await self._store.load_sealed(source.id)
        creds = await self._vault.open(workspace_id=source.workspace_id, source_id=source.id,
                                       destination=self._destination_of(source.connector, source.config),
                                       sealed=sealed)
        return Resolved(source, creds)

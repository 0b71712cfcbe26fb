"""The entity cache (hosted mode's entity cache, docs/airbyte.md): per source, opt-in with `policy.cache_ttl_seconds`.

Keys always include the workspace and the source, so an entry can never be served to another tenant.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_ENTRIES = 5_000


def cache_key(workspace_id: str, source_id: str, *parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"{workspace_id}/{source_id}/" + hashlib.sha256(blob.encode()).hexdigest()


class EntityCache:
    def __init__(self, clock: Callable[[], float], *, max_entries: int = MAX_ENTRIES) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: str, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def forget_source(self, source_id: str) -> None:
        for key in [k for k in self._items if f"/{source_id}/" in k]:
            del self._items[key]

"""The entity cache (connectors/cache.py): opt-in per source, keyed by tenant and source, expiring on the
injected clock, bounded, and forgotten per source."""

from __future__ import annotations

from keyrelay.connectors.cache import EntityCache, cache_key
from support.pipeline import ManualClock


def test_keys_separate_tenants_and_sources_and_ignore_argument_order() -> None:
    a = cache_key("ws-a", "src-1", "customers", {"limit": 5, "email": "x"})
    assert a == cache_key("ws-a", "src-1", "customers", {"email": "x", "limit": 5})
    assert a != cache_key("ws-b", "src-1", "customers", {"limit": 5, "email": "x"})
    assert a != cache_key("ws-a", "src-2", "customers", {"limit": 5, "email": "x"})
    assert a.startswith("ws-a/src-1/") and "email" not in a  # parameters are hashed, never stored in the key


def test_an_entry_lives_exactly_its_ttl() -> None:
    clock = ManualClock(1000.0)
    cache = EntityCache(clock)
    cache.put("k", {"v": 1}, ttl=10)
    clock.advance(9.999)
    assert cache.get("k") == {"v": 1}
    clock.advance(0.001)
    assert cache.get("k") is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = EntityCache(ManualClock())
    cache.put("k", 1, ttl=0)
    assert cache.get("k") is None


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = EntityCache(ManualClock(), max_entries=2)
    cache.put("a", 1, ttl=60)
    cache.put("b", 2, ttl=60)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, ttl=60)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_forget_source_drops_only_that_sources_entries() -> None:
    cache = EntityCache(ManualClock())
    one, two = cache_key("ws", "src-1", "x"), cache_key("ws", "src-2", "x")
    cache.put(one, 1, ttl=60)
    cache.put(two, 2, ttl=60)
    cache.forget_source("src-1")
    assert cache.get(one) is None and cache.get(two) == 2

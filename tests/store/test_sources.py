"""SqlSourceStore on both backends: CRUD, slug uniqueness per workspace, sealed fields."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import Conflict
from keyrelay.model import NewSource, Policy, SealedField
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.workspaces import SqlWorkspaceStore


def _id() -> str:
    return str(uuid.uuid4())


async def _ws(engine: AsyncEngine, name: str) -> str:
    return (await SqlWorkspaceStore(engine).create_workspace(id=_id(), name=name, now=1.0)).id


def _new(ws: str, slug: str, **kw: Any) -> NewSource:
    values: dict[str, Any] = {"id": _id(), "workspace_id": ws, "connector": "http", "name": slug.title(),
                              "slug": slug, "config": {"upstream_url": "https://api.example.com/v1"},
                              "policy": {"allowed_methods": ["GET"], "timeout_seconds": 5.0}}
    values.update(kw)
    return NewSource(**values)


SEALED = [SealedField("bearer_token", "key-1", b"\x00\x01" * 20), SealedField("basic", "key-1", b"\xff" * 33)]


async def test_create_and_read_round_trip(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    ws = await _ws(engine, "w")
    new = _new(ws, "echo")
    src = await store.create_source(new, SEALED, now=123.25)
    assert (src.id, src.workspace_id, src.connector, src.name, src.slug) == (new.id, ws, "http", "Echo", "echo")
    assert src.config == {"upstream_url": "https://api.example.com/v1"}
    assert src.policy == Policy(allowed_methods=frozenset({"GET"}), timeout_seconds=5.0)
    assert src.status == "active" and src.created_at == src.updated_at == 123.25
    assert src.credential_fields == ("basic", "bearer_token")
    assert await store.get_source(src.id) == src
    assert await store.get_source_by_slug(ws, "echo") == src
    assert await store.get_source_by_slug(await _ws(engine, "other"), "echo") is None
    assert await store.get_source(_id()) is None
    assert sorted(await store.load_sealed(src.id), key=lambda f: f.field) == sorted(SEALED, key=lambda f: f.field)


async def test_slug_is_unique_per_workspace_only(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    a, b = await _ws(engine, "a"), await _ws(engine, "b")
    await store.create_source(_new(a, "echo"), SEALED, now=1.0)
    await store.create_source(_new(b, "echo"), SEALED, now=1.0)  # same slug, other workspace: fine
    dup = _new(a, "echo")
    with pytest.raises(Conflict) as info:
        await store.create_source(dup, SEALED, now=2.0)
    assert info.value.field == "slug"
    assert await store.get_source(dup.id) is None  # the transaction left nothing behind
    assert await store.load_sealed(dup.id) == []


async def test_list_filters_by_workspace_and_keeps_order(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    a, b = await _ws(engine, "a"), await _ws(engine, "b")
    made = []
    for i, (ws, slug) in enumerate([(a, "one"), (b, "two"), (a, "three")]):
        made.append(await store.create_source(_new(ws, slug), SEALED[: i % 2 + 1], now=10.0 + i))
    assert [s.slug for s in await store.list_sources()] == ["one", "two", "three"]
    only_a = await store.list_sources(workspace_id=a)
    assert [s.slug for s in only_a] == ["one", "three"]
    assert only_a[0].credential_fields == ("bearer_token",)
    assert only_a[1].credential_fields == ("bearer_token",)
    assert (await store.list_sources(workspace_id=b))[0].credential_fields == ("basic", "bearer_token")
    assert [s.slug for s in await store.list_sources(limit=1)] == ["one"]


async def test_update_fields_and_replace_secrets(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    ws = await _ws(engine, "w")
    src = await store.create_source(_new(ws, "echo"), SEALED, now=1.0)
    changed = await store.update_source(src.id, changes={
        "name": "Renamed", "slug": "renamed", "status": "inactive",
        "config": {"upstream_url": "https://other.example.com"}, "policy": {"timeout_seconds": 9.0},
    }, sealed=None, now=2.0)
    assert changed is not None
    assert (changed.name, changed.slug, changed.status) == ("Renamed", "renamed", "inactive")
    assert not changed.active
    assert changed.config == {"upstream_url": "https://other.example.com"}
    assert changed.policy == Policy(timeout_seconds=9.0)
    assert changed.updated_at == 2.0 and changed.created_at == 1.0
    assert changed.credential_fields == ("basic", "bearer_token")  # untouched without `sealed`
    new_secret = [SealedField("api_key", "key-2", b"z" * 40)]
    replaced = await store.update_source(src.id, changes={}, sealed=new_secret, now=3.0)
    assert replaced is not None and replaced.credential_fields == ("api_key",)
    assert await store.load_sealed(src.id) == new_secret
    assert await store.update_source(_id(), changes={"name": "x"}, sealed=None, now=4.0) is None


async def test_update_to_a_taken_slug_is_a_conflict_and_changes_nothing(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    ws = await _ws(engine, "w")
    await store.create_source(_new(ws, "taken"), SEALED, now=1.0)
    src = await store.create_source(_new(ws, "mine"), SEALED, now=1.0)
    with pytest.raises(Conflict):
        await store.update_source(src.id, changes={"slug": "taken", "name": "X"},
                                  sealed=[SealedField("api_key", "k", b"q" * 40)], now=2.0)
    after = await store.get_source(src.id)
    assert after == src  # rolled back: name, slug and secrets unchanged


async def test_delete_removes_source_and_secrets(engine: AsyncEngine) -> None:
    store = SqlSourceStore(engine)
    ws = await _ws(engine, "w")
    src = await store.create_source(_new(ws, "echo"), SEALED, now=1.0)
    keep = await store.create_source(_new(ws, "keep"), SEALED, now=1.0)
    assert await store.delete_source(src.id) is True
    assert await store.get_source(src.id) is None and await store.load_sealed(src.id) == []
    assert await store.delete_source(src.id) is False
    assert len(await store.load_sealed(keep.id)) == 2
    await store.create_source(_new(ws, "echo"), SEALED, now=2.0)  # the slug is free again

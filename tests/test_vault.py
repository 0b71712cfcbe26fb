"""The vault: envelope encryption (master key parsing, the key file, DEK wrapping, context binding), sealed
states, never a new key over existing data, online rotation, ciphertext binding.

docs/security.md; the storage tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.errors import CredentialsUnusable, Sealed
from keyrelay.model import NewSource, Secret, Source, internal_destination
from keyrelay.runtime import runtime
from keyrelay.settings import Settings
from keyrelay.store.engine import make_engine, upgrade
from keyrelay.store.keyring import SqlKeyRingStore
from keyrelay.store.sources import SqlSourceStore
from keyrelay.store.tables import source_secrets, sources, vault_keys, workspaces
from keyrelay.store.workspaces import SqlWorkspaceStore
from keyrelay.vault import (
    KeyRing,
    KeyVault,
    Rotation,
    VaultError,
    create_key_file,
    field_aad,
    new_key,
    parse_master_key,
    read_key_file,
    unwrap_key,
    wrap_key,
)
from support.db import migrated_engine
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.secrets import revealed
from support.upstream import FakeUpstream

DEST = "http https://api.example.com:443"
CTX = {"workspace_id": "ws-a", "source_id": "src-1", "field_name": "bearer_token", "destination": DEST}


@pytest.mark.parametrize("text", [
    "", "not base64!!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(),
    base64.b64encode(b"x" * 16).decode(), "A" * 43,
])
def test_parse_master_key_refuses_bad_input(text: str) -> None:
    with pytest.raises(VaultError):
        parse_master_key(text)


def test_parse_master_key_accepts_32_bytes_with_whitespace() -> None:
    raw = os.urandom(32)
    assert parse_master_key("  " + base64.b64encode(raw).decode() + "\n") == raw


def test_parse_master_key_error_never_echoes_the_input() -> None:
    bad = base64.b64encode(b"SECRETKEYMATERIAL" * 2).decode()
    with pytest.raises(VaultError) as info:
        parse_master_key(bad)
    assert bad not in str(info.value) and "SECRETKEYMATERIAL" not in str(info.value)


def test_create_key_file_is_0600_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "master.key"
    key = create_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key


def test_create_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        create_key_file(path)
    assert path.read_bytes() == before
    assert read_key_file(path) == first


def test_read_key_file_missing_is_none_and_garbage_is_an_error(tmp_path: Path) -> None:
    assert read_key_file(tmp_path / "nope.key") is None
    bad = tmp_path / "bad.key"
    bad.write_text("garbage\n")
    with pytest.raises(VaultError):
        read_key_file(bad)


def test_wrap_unwrap_round_trip_and_binding() -> None:
    master, dek = new_key(), new_key()
    wrapped = wrap_key(master, "k1", dek)
    assert dek not in wrapped
    assert unwrap_key(master, "k1", wrapped) == dek
    with pytest.raises(VaultError):
        unwrap_key(master, "k2", wrapped)  # bound to its key id
    with pytest.raises(VaultError):
        unwrap_key(new_key(), "k1", wrapped)  # wrong master key
    with pytest.raises(VaultError):
        unwrap_key(master, "k1", wrapped[:20])  # truncated
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(VaultError):
        unwrap_key(master, "k1", bytes(tampered))


def test_wrapping_uses_a_fresh_nonce() -> None:
    master, dek = new_key(), new_key()
    assert wrap_key(master, "k", dek) != wrap_key(master, "k", dek)


def _ring() -> KeyRing:
    ring = KeyRing(keys={"k1": new_key(), "k2": new_key()}, active_id="k1")
    return ring


def test_keyring_round_trip() -> None:
    ring = _ring()
    key_id, blob = ring.encrypt(b"CANARY-plain", **CTX)
    assert key_id == "k1" and b"CANARY-plain" not in blob
    assert ring.decrypt(blob, key_id=key_id, **CTX) == b"CANARY-plain"


@pytest.mark.parametrize("change", [
    {"workspace_id": "ws-b"}, {"source_id": "src-2"}, {"field_name": "basic"}, {"key_id": "k2"},
    {"destination": "http https://evil.example:443"}, {"destination": "http https://api.example.com:8443"},
    {"destination": "stripe https://api.example.com:443"}, {"destination": None},
])
def test_keyring_ciphertext_is_bound_to_its_context(change: dict[str, str | None]) -> None:
    ring = _ring()
    key_id, blob = ring.encrypt(b"secret", **CTX)
    args: dict[str, Any] = {**CTX, "key_id": key_id, **change}
    with pytest.raises(VaultError):
        ring.decrypt(blob, **args)


def test_keyring_same_key_different_key_id_label_fails() -> None:
    """The key id is part of the AAD: the same DEK registered under another id does not decrypt."""
    dek = new_key()
    ring = KeyRing(keys={"k1": dek, "alias": dek}, active_id="k1")
    _, blob = ring.encrypt(b"secret", **CTX)
    with pytest.raises(VaultError):
        ring.decrypt(blob, key_id="alias", **CTX)


def test_keyring_unknown_key_and_no_active_key() -> None:
    ring = _ring()
    _, blob = ring.encrypt(b"secret", **CTX)
    with pytest.raises(VaultError):
        ring.decrypt(blob, key_id="k3", **CTX)
    with pytest.raises(VaultError):
        KeyRing().encrypt(b"x", **CTX)


def test_context_parts_may_not_contain_the_separator() -> None:
    """Otherwise 'a|b' + 'c' and 'a' + 'b|c' would share associated data."""
    ring = _ring()
    with pytest.raises(VaultError):
        ring.encrypt(b"x", workspace_id="ws|x", source_id="s", field_name="f", destination=DEST)
    with pytest.raises(VaultError):
        field_aad("w", "s", "f|g", "k", DEST)
    with pytest.raises(VaultError):
        field_aad("w", "s", "f", "k", "http https://a:1|x")


@pytest.fixture
async def engine(database_url: str | None, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, tmp_path) as eng:
        yield eng


async def _vault(engine: AsyncEngine, master: bytes | None, *, may_create: bool = True) -> KeyVault:
    v = KeyVault(SqlKeyRingStore(engine), master, clock=time.time)
    await v.load(may_create=may_create)
    return v


async def _key_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(vault_keys).order_by(vault_keys.c.id))
        return [(r.id, bytes(r.wrapped), r.status, r.created_at) for r in rows]


async def _secret_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(source_secrets).order_by(source_secrets.c.source_id,
                                                                     source_secrets.c.field))
        return [(r.source_id, r.field, r.key_id, bytes(r.ciphertext)) for r in rows]


async def _add_source(engine: AsyncEngine, vault: KeyVault, ws_id: str, slug: str,
                      creds: dict[str, Any]) -> Source:
    sid = str(uuid.uuid4())
    sealed = await vault.seal(workspace_id=ws_id, source_id=sid, destination=DEST, fields=creds)
    new = NewSource(id=sid, workspace_id=ws_id, connector="http", name=slug, slug=slug,
                    config={"upstream_url": "https://api.example.com"}, policy={})
    return await SqlSourceStore(engine).create_source(new, sealed, now=time.time())


async def _open(engine: AsyncEngine, vault: KeyVault, src: Source, destination: str = DEST) -> dict[str, Any]:
    sealed = await SqlSourceStore(engine).load_sealed(src.id)
    opened = await vault.open(workspace_id=src.workspace_id, source_id=src.id, destination=destination,
                              sealed=sealed)
    return dict(revealed(dict(opened.fields)))


async def _workspace(engine: AsyncEngine, name: str) -> str:
    ws = await SqlWorkspaceStore(engine).create_workspace(id=str(uuid.uuid4()), name=name, now=time.time())
    return ws.id


async def test_first_load_creates_exactly_one_active_key(engine: AsyncEngine) -> None:
    master = new_key()
    v = await _vault(engine, master)
    assert not v.sealed
    rows = await _key_rows(engine)
    assert len(rows) == 1 and rows[0][2] == "active"
    assert not (await _vault(engine, master)).sealed  # a second start with the same key
    assert (await _vault(engine, new_key())).sealed  # ... and one with another key
    assert await _key_rows(engine) == rows


async def test_no_master_key_and_empty_ring_is_sealed_without_creating(engine: AsyncEngine) -> None:
    v = await _vault(engine, None)
    assert v.sealed
    assert await _key_rows(engine) == []
    v2 = await _vault(engine, new_key(), may_create=False)
    assert v2.sealed and await _key_rows(engine) == []


async def test_missing_master_key_over_existing_ring_is_sealed(engine: AsyncEngine) -> None:
    master = new_key()
    good = await _vault(engine, master)
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, good, ws, "s", {"bearer_token": "tok"})
    before = await _key_rows(engine)
    sealed = await _vault(engine, None)
    assert sealed.sealed and sealed.sealed_reason == "master key missing"
    with pytest.raises(Sealed):
        await sealed.seal(workspace_id=ws, source_id=src.id, destination=DEST, fields={"bearer_token": "x"})
    with pytest.raises(Sealed):
        await _open(engine, sealed, src)
    with pytest.raises(Sealed):
        await sealed.rotate()
    assert await _key_rows(engine) == before


async def test_wrong_master_key_is_sealed_and_writes_no_new_key(engine: AsyncEngine,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    master, wrong = new_key(), new_key()
    good = await _vault(engine, master)
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, good, ws, "s", {"bearer_token": "tok"})
    keys_before, secrets_before = await _key_rows(engine), await _secret_rows(engine)
    caplog.set_level(logging.DEBUG)
    bad = await _vault(engine, wrong, may_create=True)
    assert bad.sealed and "does not match" in str(bad.sealed_reason)
    with pytest.raises(Sealed):
        await bad.seal(workspace_id=ws, source_id=src.id, destination=DEST, fields={"bearer_token": "x"})
    with pytest.raises(Sealed):
        await _open(engine, bad, src)
    with pytest.raises(Sealed):
        await bad.rotate()
    assert await _key_rows(engine) == keys_before
    assert await _secret_rows(engine) == secrets_before
    for key in (master, wrong):  # 0 key bytes logged (docs/security.md: sealed mode)
        for form in (base64.b64encode(key).decode(), key.hex()):
            assert form not in caplog.text
    assert await _open(engine, await _vault(engine, master), src) == {"bearer_token": "tok"}


async def test_runtime_never_creates_a_key_over_existing_data(tmp_path: Path, database_url: str | None) -> None:
    """A first start creates the key file; a start without it stays sealed and creates nothing."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    async with runtime(settings) as rt:
        assert not rt.services.vault.sealed
    key_file = settings.key_file
    original = key_file.read_bytes()
    key_file.unlink()
    async with runtime(settings) as rt:
        engine_keys = await _runtime_key_ids(settings)
        assert rt.services.vault.sealed
        assert not key_file.exists()  # no new key file over existing data
    assert await _runtime_key_ids(settings) == engine_keys and len(engine_keys) == 1
    key_file.write_bytes(original)
    async with runtime(settings) as rt:
        assert not rt.services.vault.sealed


async def _runtime_key_ids(settings: Settings) -> list[tuple[Any, ...]]:
    eng = make_engine(settings.resolved_database_url)
    try:
        return await _key_rows(eng)
    finally:
        await eng.dispose()


async def test_rotate_reencrypts_every_secret(engine: AsyncEngine) -> None:
    master = new_key()
    v = await _vault(engine, master)
    ws = await _workspace(engine, "w")
    expected = {}
    for i in range(5):
        creds = {"bearer_token": f"tok-{i}", "basic": {"username": "u", "password": f"p-{i}"}}
        expected[(await _add_source(engine, v, ws, f"s{i}", creds)).id] = creds
    old_id = (await _key_rows(engine))[0][0]
    assert await v.rotate() == Rotation(10, 0)
    rows = await _secret_rows(engine)
    assert len(rows) == 10 and all(r[2] != old_id for r in rows)
    keys = {r[0]: r[2] for r in await _key_rows(engine)}
    assert keys[old_id] == "retired" and list(keys.values()).count("active") == 1
    new_id = next(k for k, s in keys.items() if s == "active")
    assert {r[2] for r in rows} == {new_id}
    store = SqlSourceStore(engine)
    fresh = await _vault(engine, master)  # another process: loads the rotated ring
    for sid, creds in expected.items():
        src = await store.get_source(sid)
        assert src is not None
        assert await _open(engine, v, src) == creds
        assert await _open(engine, fresh, src) == creds
    # a second rotation drops the key retired by the first (nothing uses it any more)
    assert await v.rotate() == Rotation(10, 0)
    ids = {r[0] for r in await _key_rows(engine)}
    assert old_id not in ids and new_id in ids and len(ids) == 2
    # removing every retired key breaks 0 credentials (docs/security.md: key rotation)
    async with engine.begin() as conn:
        await conn.execute(sa.delete(vault_keys).where(vault_keys.c.status == "retired"))
    after = await _vault(engine, master)
    for sid, creds in expected.items():
        src = await store.get_source(sid)
        assert src is not None and await _open(engine, after, src) == creds


async def test_rotation_covers_connects_sealed_values_too(engine: AsyncEngine) -> None:
    """OAuth client secrets, webhook signing secrets and PKCE verifiers are sealed outside source_secrets, bound to
    (table, row id, column): rotation re-encrypts them and never drops a key they still use."""
    from keyrelay.manage.oauth_clients import OAuthClient
    from keyrelay.manage.webhooks import Webhook
    from keyrelay.store.keyring import SEALED_ELSEWHERE
    from keyrelay.store.oauth_clients import SqlOAuthClientStore
    from keyrelay.store.webhooks import SqlWebhookStore

    master = new_key()
    v = await _vault(engine, master)
    clients, hooks = SqlOAuthClientStore(engine), SqlWebhookStore(engine)
    sealed = await v.seal(workspace_id="oauth_clients", source_id="github",
                          destination=internal_destination("oauth_clients"), fields={"client_secret": "cs-1"})
    await clients.put_client(OAuthClient(connector="github", client_id="c", secret=sealed[0], scopes=None,
                                         authorize_url=None, token_url=None, created_at=1.0, updated_at=1.0))
    sealed = await v.seal(workspace_id="webhooks", source_id="w1", destination=internal_destination("webhooks"),
                          fields={"secret": "whsec_1"})
    await hooks.create_webhook(Webhook(id="w1", url="https://h.example.com/", events=("connection.created",),
                                       secret=sealed[0], created_at=1.0))
    first_key = (await _key_rows(engine))[0][0]
    assert {t.name for t, _, _ in SEALED_ELSEWHERE} == {"oauth_clients", "webhooks", "connect_oauth_states"}
    assert (await v.rotate()).reencrypted == 2
    assert (await v.rotate()).reencrypted == 2  # the first key is retired and now unused: dropped
    async with engine.begin() as conn:
        await conn.execute(sa.delete(vault_keys).where(vault_keys.c.status == "retired"))
    after = await _vault(engine, master)
    client, hook = await clients.get_client("github"), await hooks.get_webhook("w1")
    assert client is not None and hook is not None and first_key not in (client.secret.key_id, hook.secret.key_id)
    opened = await after.open(workspace_id="oauth_clients", source_id="github",
                              destination=internal_destination("oauth_clients"), sealed=[client.secret])
    assert revealed(opened.fields) == {"client_secret": "cs-1"}
    opened = await after.open(workspace_id="webhooks", source_id="w1", destination=internal_destination("webhooks"),
                              sealed=[hook.secret])
    assert revealed(opened.fields) == {"secret": "whsec_1"}
    with pytest.raises(CredentialsUnusable):  # never opens as a source's credential, whatever the caller claims
        await after.open(workspace_id="webhooks", source_id="w1", destination="http:https://h.example.com:443",
                         sealed=[dataclasses.replace(hook.secret, destination="http:https://h.example.com:443")])


async def test_a_stale_vault_picks_up_another_processes_rotation(engine: AsyncEngine) -> None:
    master = new_key()
    a, b = await _vault(engine, master), await _vault(engine, master)
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, a, ws, "s", {"bearer_token": "tok"})
    await b.rotate()
    assert await _open(engine, a, src) == {"bearer_token": "tok"}  # refreshes its ring on an unknown key id
    src2 = await _add_source(engine, a, ws, "s2", {"bearer_token": "tok2"})  # written under the new key
    active = next(r[0] for r in await _key_rows(engine) if r[2] == "active")
    assert {r[2] for r in await _secret_rows(engine) if r[0] == src2.id} == {active}


@pytest.mark.parametrize("target", ["other_source_same_field", "same_source_other_field",
                                    "other_workspace_source"])
async def test_copied_ciphertext_fails_to_decrypt(engine: AsyncEngine, target: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    v = await _vault(engine, new_key())
    ws_a, ws_b = await _workspace(engine, "a"), await _workspace(engine, "b")
    victim = await _add_source(engine, v, ws_a, "victim", {"bearer_token": "CANARY-victim-token",
                                                           "inject_headers": {"X-A": "a"}})
    other_ws = ws_b if target == "other_workspace_source" else ws_a
    thief = await _add_source(engine, v, other_ws, "thief", {"bearer_token": "thief-token",
                                                             "inject_headers": {"X-T": "t"}})
    stolen = next(r for r in await _secret_rows(engine) if r[0] == victim.id and r[1] == "bearer_token")
    dest_source = victim.id if target == "same_source_other_field" else thief.id
    dest_field = "inject_headers" if target == "same_source_other_field" else "bearer_token"
    async with engine.begin() as conn:
        res = await conn.execute(sa.update(source_secrets).where(
            source_secrets.c.source_id == dest_source, source_secrets.c.field == dest_field,
        ).values(key_id=stolen[2], ciphertext=stolen[3]))
        assert res.rowcount == 1
    dest = victim if dest_source == victim.id else thief
    opened: dict[str, Any] | None = None
    with pytest.raises(CredentialsUnusable) as info:
        opened = await _open(engine, v, dest)
    assert opened is None  # nothing to inject
    assert "CANARY" not in str(info.value) and "CANARY" not in caplog.text
    untouched = thief if dest is victim else victim
    if target != "same_source_other_field":
        assert (await _open(engine, v, untouched))["bearer_token"] == "CANARY-victim-token"


def test_moved_ciphertext_is_never_injected_through_the_gateway(kr_settings: dict[str, Any],
                                                                upstream: FakeUpstream) -> None:
    """End to end: after an SQL copy of A's ciphertext onto B, a gateway call for B injects nothing."""
    kr_settings["source_cache_seconds"] = 0
    with KeyrelayServer(make_settings(**kr_settings)) as kr:
        admin = Admin(kr.url)
        ws_a, ws_b = admin.workspace("a"), admin.workspace("b")
        victim = admin.source(ws_a, upstream_url=upstream.url, slug="victim",
                              credentials={"bearer_token": "CANARY-victim-only"})
        thief = admin.source(ws_b, upstream_url=upstream.url, slug="thief",
                             credentials={"bearer_token": "thief-token"})
        r = httpx.get(f"{kr.url}/api/{ws_b}/proxy/thief/status/200", headers=admin.headers)
        assert r.status_code == 200 and upstream.requests[-1].header("authorization") == "Bearer thief-token"
        db = sqlite3.connect(kr.settings.data_dir / "keyrelay.db")
        with db:
            cur = db.execute(
                "UPDATE source_secrets SET (key_id, ciphertext) = (SELECT key_id, ciphertext FROM source_secrets "
                "WHERE source_id = ? AND field = 'bearer_token') WHERE source_id = ? AND field = 'bearer_token'",
                (victim["id"], thief["id"]))
            assert cur.rowcount == 1
        db.close()
        before = len(upstream.requests)
        r = httpx.get(f"{kr.url}/api/{ws_b}/proxy/thief/status/200", headers=admin.headers)
        assert r.status_code == 409 and r.json()["error"]["code"] == "credentials_unusable"
        assert "CANARY" not in r.text
        assert len(upstream.requests) == before  # nothing was sent, so nothing was injected
        assert all("CANARY-victim-only" not in str(req.headers) for req in upstream.requests)
        admin.close()


# --- destination binding ------------------------------------------------------------------------------------

async def test_open_refuses_a_field_sealed_for_another_destination(engine: AsyncEngine,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    v = await _vault(engine, new_key())
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, v, ws, "s", {"bearer_token": "CANARY-bound"})
    elsewhere = "http https://evil.example:443"
    caplog.set_level(logging.ERROR, logger="keyrelay.vault")
    with pytest.raises(CredentialsUnusable) as info:
        await _open(engine, v, src, destination=elsewhere)
    assert info.value.status == 409 and info.value.code == "credentials_unusable"
    assert "was stored for another destination" in caplog.text  # the log says why, without the value
    # the row edited to claim the new destination still does not open: the destination is in the AAD
    async with engine.begin() as conn:
        await conn.execute(sa.update(source_secrets).values(destination=elsewhere))
    with pytest.raises(CredentialsUnusable):
        await _open(engine, v, src, destination=elsewhere)
    assert "CANARY" not in caplog.text and "CANARY" not in str(info.value)


async def test_a_field_of_the_older_binding_is_never_opened_for_a_request(engine: AsyncEngine,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="keyrelay.vault")
    v = await _vault(engine, new_key())
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, v, ws, "s", {"bearer_token": "tok"})
    key_id = (await _key_rows(engine))[0][0]
    legacy = v._ring.keys[key_id]  # the older binding's associated data: workspace|source|field|key_id
    blob = _old_code_seal(legacy, f"{ws}|{src.id}|bearer_token|{key_id}", "tok")
    async with engine.begin() as conn:
        await conn.execute(sa.update(source_secrets).values(ciphertext=blob, destination=None))
    for destination in (DEST, "http https://evil.example:443"):
        caplog.clear()
        with pytest.raises(CredentialsUnusable):
            await _open(engine, v, src, destination=destination)
        assert "before credentials were bound to destinations" in caplog.text


def _old_code_seal(dek: bytes, aad: str, value: Any) -> bytes:
    """What the code before destination binding wrote: AES-GCM, random nonce, AAD without a destination."""
    nonce = os.urandom(12)
    return nonce + AESGCM(dek).encrypt(nonce, json.dumps(value).encode(), aad.encode())


async def test_rotation_keeps_each_binding_and_skips_what_does_not_decrypt(engine: AsyncEngine) -> None:
    v = await _vault(engine, new_key())
    ws = await _workspace(engine, "w")
    good = await _add_source(engine, v, ws, "good", {"bearer_token": "tok-good"})
    bad = await _add_source(engine, v, ws, "bad", {"bearer_token": "tok-bad"})
    async with engine.begin() as conn:
        await conn.execute(sa.update(source_secrets).where(source_secrets.c.source_id == bad.id)
                           .values(ciphertext=b"\0" * 40))
    assert await v.rotate() == Rotation(1, 1)
    assert await _open(engine, v, good) == {"bearer_token": "tok-good"}
    with pytest.raises(CredentialsUnusable):
        await _open(engine, v, good, destination="http https://evil.example:443")
    assert await v.rotate() == Rotation(1, 1)  # the bad row keeps its key; the rotation still ends


async def test_upgrade_from_a_database_written_by_the_old_code(tmp_path: Path, database_url: str | None,
                                                               upstream: FakeUpstream) -> None:
    """A database at migration 0002 with ciphertexts sealed the old way: the first start re-seals them to their
    source's destination, requests inject them, and a ciphertext of the old binding written after that stays
    refused (also after a restart)."""
    master = new_key()
    settings = make_settings(data_dir=tmp_path / "data", database_url=database_url, source_cache_seconds=0,
                             master_key=base64.b64encode(master).decode())
    settings.data_dir.mkdir(parents=True)
    old = await _old_database(settings.resolved_database_url, master, upstream.url)
    with KeyrelayServer(settings) as kr:
        admin = Admin(kr.url)
        r = httpx.get(f"{kr.url}/api/{old['ws']}/proxy/legacy/status/200", headers=admin.headers)
        assert r.status_code == 200, r.text
        assert upstream.requests[-1].header("authorization") == "Bearer CANARY-legacy-token"
        broken = httpx.get(f"{kr.url}/api/{old['ws']}/proxy/broken/status/200", headers=admin.headers)
        assert broken.status_code == 409 and broken.json()["error"]["code"] == "credentials_unusable"
        rows = {(r.source_id, r.field): r for r in await _rows(settings.resolved_database_url)}
        assert rows[(old["legacy"], "bearer_token")].destination == f"http http://127.0.0.1:{upstream.port}"
        assert rows[(old["broken"], "bearer_token")].destination is None
        # an old instance writes the old binding after the upgrade: refused, never re-sealed
        await _exec(settings.resolved_database_url, sa.update(source_secrets).where(
            source_secrets.c.source_id == old["legacy"]).values(ciphertext=old["legacy_blob"], destination=None))
        before = len(upstream.requests)
        again = httpx.get(f"{kr.url}/api/{old['ws']}/proxy/legacy/status/200", headers=admin.headers)
        assert again.status_code == 409 and len(upstream.requests) == before
        done = kr.run(kr.app.runtime.services.vault.rotate())  # type: ignore[union-attr]
        assert done == Rotation(0, 2)
        admin.close()
    with KeyrelayServer(settings) as kr:
        admin = Admin(kr.url)
        r = httpx.get(f"{kr.url}/api/{old['ws']}/proxy/legacy/status/200", headers=admin.headers)
        assert r.status_code == 409 and len(upstream.requests) == before
        admin.close()


async def _old_database(url: str, master: bytes, upstream_url: str) -> dict[str, Any]:
    eng = make_engine(url)
    try:
        await upgrade(eng, "0002")
        key_id, dek, ws, now = str(uuid.uuid4()), new_key(), str(uuid.uuid4()), time.time()
        out: dict[str, Any] = {"ws": ws}
        async with eng.begin() as conn:
            await conn.execute(sa.insert(vault_keys).values(id=key_id, wrapped=wrap_key(master, key_id, dek),
                                                            status="active", created_at=now))
            await conn.execute(sa.insert(workspaces).values(id=ws, name="old", created_at=now))
            for slug in ("legacy", "broken"):
                sid = out[slug] = str(uuid.uuid4())
                await conn.execute(sa.insert(sources).values(
                    id=sid, workspace_id=ws, connector="http", name=slug, slug=slug,
                    config=json.dumps({"upstream_url": upstream_url}), policy="{}", status="active",
                    created_at=now, updated_at=now))
                blob = _old_code_seal(dek, f"{ws}|{sid}|bearer_token|{key_id}", "CANARY-legacy-token")
                if slug == "broken":
                    blob = blob[:-1] + bytes([blob[-1] ^ 1])
                else:
                    out["legacy_blob"] = blob
                await conn.execute(sa.insert(source_secrets).values(source_id=sid, field="bearer_token",
                                                                    key_id=key_id, ciphertext=blob))
        return out
    finally:
        await eng.dispose()


async def _rows(url: str) -> list[Any]:
    eng = make_engine(url)
    try:
        async with eng.connect() as conn:
            return list(await conn.execute(sa.select(source_secrets)))
    finally:
        await eng.dispose()


async def _exec(url: str, statement: Any) -> None:
    eng = make_engine(url)
    try:
        async with eng.begin() as conn:
            await conn.execute(statement)
    finally:
        await eng.dispose()


async def test_opened_credentials_carry_every_string_as_a_secret(engine: AsyncEngine) -> None:
    v = await _vault(engine, new_key())
    ws = await _workspace(engine, "w")
    src = await _add_source(engine, v, ws, "s", {
        "bearer_token": "PLAIN-tok-1", "basic": {"username": "u", "password": "p"},
        "api_key": {"value": "k", "header": "X-Key", "n": 3}})
    sealed = await SqlSourceStore(engine).load_sealed(src.id)
    opened = await v.open(workspace_id=ws, source_id=src.id, destination=DEST, sealed=sealed)
    f = opened.fields
    assert isinstance(f["bearer_token"], Secret) and f["bearer_token"].reveal() == "PLAIN-tok-1"
    assert isinstance(f["basic"]["password"], Secret) and isinstance(f["basic"]["username"], Secret)
    assert isinstance(f["api_key"]["value"], Secret) and f["api_key"]["n"] == 3
    assert "PLAIN-tok-1" not in repr(opened) and "PLAIN-tok-1" not in str(opened)


async def test_a_stale_vault_seals_under_the_newest_key(engine: AsyncEngine) -> None:
    """Writes reload the ring first: a process that has not met a rotation yet still writes under the new key."""
    master = new_key()
    a, b = await _vault(engine, master), await _vault(engine, master)
    ws = await _workspace(engine, "w")
    await b.rotate()
    active = next(r[0] for r in await _key_rows(engine) if r[2] == "active")
    sealed = await a.seal(workspace_id=ws, source_id="s1", destination=DEST, fields={"bearer_token": "t"})
    assert [f.key_id for f in sealed] == [active]


async def test_a_sealed_record_opens_only_for_its_context(engine: AsyncEngine) -> None:
    from keyrelay.vault import record_aad

    v = await _vault(engine, new_key())
    context = ("approval", "apv_1", "ws-1", "request", "ab" * 32)
    sealed = await v.seal_record(context, b"parked body 6f1e")
    assert b"parked body" not in sealed.blob and sealed.key_id
    assert await v.open_record(context, sealed) == b"parked body 6f1e"
    for other in (("approval", "apv_2", "ws-1", "request", "ab" * 32), ("approval", "apv_1", "ws-2", "request",
                  "ab" * 32), ("approval", "apv_1", "ws-1", "response", "ab" * 32),
                  ("approval", "apv_1", "ws-1", "request", "cd" * 32)):
        with pytest.raises(VaultError):
            await v.open_record(other, sealed)
    flipped = type(sealed)(sealed.key_id, sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1]))
    with pytest.raises(VaultError):
        await v.open_record(context, flipped)
    with pytest.raises(VaultError):  # a credential's associated data can never be a record's
        record_aad(("a|b",), "k")
    sealed_vault = await _vault(engine, None, may_create=False)
    with pytest.raises(Sealed):
        await sealed_vault.seal_record(context, b"x")


async def test_rotation_keeps_the_keys_that_parked_requests_still_use(engine: AsyncEngine) -> None:
    from keyrelay.model import Approval, ApprovalStatus
    from keyrelay.store.approvals import SqlApprovalStore

    master = new_key()
    v = await _vault(engine, master)
    ws = await _workspace(engine, "w")
    context = ("approval", "apv_kept", ws, "request", "0" * 64)
    sealed = await v.seal_record(context, b"still pending")
    await SqlApprovalStore(engine).add(Approval(
        id="apv_kept", workspace_id=ws, source_id="s", door="gateway", caller="key:1", caller_kind="api_key",
        caller_scopes=frozenset(), method="POST", path="/p", action=None, request_hash="0" * 64, request=sealed,
        body_bytes=13, status=ApprovalStatus.PENDING, created_at=0.0, expires_at=10.0**10))
    await v.rotate()
    await v.rotate()  # would drop the first key if nothing used it
    assert sealed.key_id in {r[0] for r in await _key_rows(engine)}
    assert await (await _vault(engine, master)).open_record(context, sealed) == b"still pending"

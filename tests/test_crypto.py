"""AES-256-GCM envelope encryption: master key parsing, the key file, DEK wrapping and context binding."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from keyrelay import crypto
from keyrelay.crypto import KeyRing, VaultError

CTX = {"workspace_id": "ws-a", "source_id": "src-1", "field_name": "bearer_token"}


@pytest.mark.parametrize("text", [
    "", "not base64!!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(),
    base64.b64encode(b"x" * 16).decode(), "A" * 43,
])
def test_parse_master_key_refuses_bad_input(text: str) -> None:
    with pytest.raises(VaultError):
        crypto.parse_master_key(text)


def test_parse_master_key_accepts_32_bytes_with_whitespace() -> None:
    raw = os.urandom(32)
    assert crypto.parse_master_key("  " + base64.b64encode(raw).decode() + "\n") == raw


def test_parse_master_key_error_never_echoes_the_input() -> None:
    bad = base64.b64encode(b"SECRETKEYMATERIAL" * 2).decode()
    with pytest.raises(VaultError) as info:
        crypto.parse_master_key(bad)
    assert bad not in str(info.value) and "SECRETKEYMATERIAL" not in str(info.value)


def test_create_key_file_is_0600_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "master.key"
    key = crypto.create_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.read_key_file(path) == key


def test_create_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = crypto.create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        crypto.create_key_file(path)
    assert path.read_bytes() == before
    assert crypto.read_key_file(path) == first


def test_read_key_file_missing_is_none_and_garbage_is_an_error(tmp_path: Path) -> None:
    assert crypto.read_key_file(tmp_path / "nope.key") is None
    bad = tmp_path / "bad.key"
    bad.write_text("garbage\n")
    with pytest.raises(VaultError):
        crypto.read_key_file(bad)


def test_wrap_unwrap_round_trip_and_binding() -> None:
    master, dek = crypto.new_key(), crypto.new_key()
    wrapped = crypto.wrap_key(master, "k1", dek)
    assert dek not in wrapped
    assert crypto.unwrap_key(master, "k1", wrapped) == dek
    with pytest.raises(VaultError):
        crypto.unwrap_key(master, "k2", wrapped)  # bound to its key id
    with pytest.raises(VaultError):
        crypto.unwrap_key(crypto.new_key(), "k1", wrapped)  # wrong master key
    with pytest.raises(VaultError):
        crypto.unwrap_key(master, "k1", wrapped[:20])  # truncated
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(VaultError):
        crypto.unwrap_key(master, "k1", bytes(tampered))


def test_wrapping_uses_a_fresh_nonce() -> None:
    master, dek = crypto.new_key(), crypto.new_key()
    assert crypto.wrap_key(master, "k", dek) != crypto.wrap_key(master, "k", dek)


def _ring() -> KeyRing:
    ring = KeyRing(keys={"k1": crypto.new_key(), "k2": crypto.new_key()}, active_id="k1")
    return ring


def test_keyring_round_trip() -> None:
    ring = _ring()
    key_id, blob = ring.encrypt(b"CANARY-plain", **CTX)
    assert key_id == "k1" and b"CANARY-plain" not in blob
    assert ring.decrypt(blob, key_id=key_id, **CTX) == b"CANARY-plain"


@pytest.mark.parametrize("change", [
    {"workspace_id": "ws-b"}, {"source_id": "src-2"}, {"field_name": "basic"}, {"key_id": "k2"},
])
def test_keyring_ciphertext_is_bound_to_its_context(change: dict[str, str]) -> None:
    ring = _ring()
    key_id, blob = ring.encrypt(b"secret", **CTX)
    args: dict[str, str] = {**CTX, "key_id": key_id, **change}
    with pytest.raises(VaultError):
        ring.decrypt(blob, **args)


def test_keyring_same_key_different_key_id_label_fails() -> None:
    """The key id is part of the AAD: the same DEK registered under another id does not decrypt."""
    dek = crypto.new_key()
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
        ring.encrypt(b"x", workspace_id="ws|x", source_id="s", field_name="f")
    with pytest.raises(VaultError):
        crypto.field_aad("w", "s", "f|g", "k")

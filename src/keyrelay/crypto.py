"""AES-256-GCM envelope encryption with a key ring and context binding.

The master key (32 bytes, from `KEYRELAY_MASTER_KEY` or the key file) only wraps data-encryption keys (DEKs);
DEKs encrypt credential fields. Every ciphertext is bound by associated data to
`workspace_id|source_id|field|key_id`, so a ciphertext copied to another row, workspace or field fails to
decrypt. Wrapped DEKs are bound to their key id the same way.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
KEY_BYTES = 32


class VaultError(Exception):
    """A key is missing, wrong or does not match the ciphertext. Never carries key material."""


def parse_master_key(text: str) -> bytes:
    """Decode a base64 master key; it must be exactly 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError("master key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise VaultError("master key must be 32 bytes (base64 of 32 random bytes)")
    return raw


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def read_key_file(path: Path) -> bytes | None:
    """The master key from its file, or None when the file does not exist."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    return parse_master_key(text)


def create_key_file(path: Path) -> bytes:
    """Create the master key file with mode 0600; fails if it already exists (never overwrite a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise VaultError("ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise VaultError("ciphertext does not match its key or context") from None


def wrap_key(master: bytes, key_id: str, dek: bytes) -> bytes:
    return _seal(master, dek, b"keyrelay/dek|" + key_id.encode())


def unwrap_key(master: bytes, key_id: str, wrapped: bytes) -> bytes:
    return _open(master, wrapped, b"keyrelay/dek|" + key_id.encode())


def field_aad(workspace_id: str, source_id: str, field_name: str, key_id: str) -> bytes:
    for part in (workspace_id, source_id, field_name, key_id):
        if "|" in part:
            raise VaultError("context parts may not contain '|'")
    return f"{workspace_id}|{source_id}|{field_name}|{key_id}".encode()


@dataclass
class KeyRing:
    """Unwrapped DEKs by key id, and the id new ciphertexts are written under."""

    keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    active_id: str | None = None

    def encrypt(self, plaintext: bytes, *, workspace_id: str, source_id: str, field_name: str) -> tuple[str, bytes]:
        if self.active_id is None:
            raise VaultError("no active key")
        key_id = self.active_id
        aad = field_aad(workspace_id, source_id, field_name, key_id)
        return key_id, _seal(self.keys[key_id], plaintext, aad)

    def decrypt(self, blob: bytes, *, key_id: str, workspace_id: str, source_id: str, field_name: str) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise VaultError("unknown key id")
        return _open(key, blob, field_aad(workspace_id, source_id, field_name, key_id))

"""The vault: AES-256-GCM envelope encryption of credential fields, the key ring, and the Vault port's
implementation (`KeyVault`): loading the ring, the sealed state, sealing/opening fields, online rotation.

The master key (32 bytes, from `KEYRELAY_MASTER_KEY` or the key file) only wraps data-encryption keys (DEKs);
DEKs encrypt credential fields. Every ciphertext is bound by associated data to
`v2|workspace_id|source_id|field|key_id|destination`, where the destination names the source's connector and
every origin (scheme, host, port) its requests and token refreshes go to (`manage/destinations.py`). A
ciphertext copied to another row, workspace or field, or left behind when the source's destination is edited
in the database, fails to decrypt: the request is refused with 409 `credentials_unusable` and nothing is
injected. Wrapped DEKs are bound to their key id the same way.

Ciphertexts written before destinations were bound (`destination` NULL, associated data
`workspace_id|source_id|field|key_id`) are re-sealed once, at the first start with the master key
(`rebind_legacy`); after that, such a row is never trusted again (docs/security.md: encryption at rest).

Start-up rules (docs/security.md): a database that already has keys is never given a new master key; a missing
or wrong master key leaves the vault *sealed* (credential-using requests get 503 `sealed`). The key ring's
rows live in `store/keyring.py`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyrelay.errors import CredentialsUnusable, Sealed
from keyrelay.model import Credentials, SealedField, SealedRecord, seal_strings
from keyrelay.store.keyring import SqlKeyRingStore

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


def field_aad(workspace_id: str, source_id: str, field_name: str, key_id: str, destination: str | None) -> bytes:
    """The associated data of a credential field. `destination` None: the legacy binding (no destination), which
    only `KeyVault.rebind_legacy` may open. The two forms never collide: no part may contain `|`, and they have
    four and six parts."""
    parts = (workspace_id, source_id, field_name, key_id) if destination is None else \
        ("v2", workspace_id, source_id, field_name, key_id, destination)
    for part in parts:
        if "|" in part:
            raise VaultError("context parts may not contain '|'")
    return "|".join(parts).encode()


def record_aad(context: Sequence[str], key_id: str) -> bytes:
    """The associated data of a sealed record (a parked request, a kept response): `rec1|<context>|key_id`. It
    never collides with a credential's (those start with `v2|` or a workspace id, and have four or six parts)."""
    parts = ("rec1", *context, key_id)
    if any("|" in part for part in parts):
        raise VaultError("context parts may not contain '|'")
    return "|".join(parts).encode()


@dataclass
class KeyRing:
    """Unwrapped DEKs by key id, and the id new ciphertexts are written under."""

    keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    active_id: str | None = None

    def encrypt(self, plaintext: bytes, *, workspace_id: str, source_id: str, field_name: str,
                destination: str) -> tuple[str, bytes]:
        if self.active_id is None:
            raise VaultError("no active key")
        key_id = self.active_id
        aad = field_aad(workspace_id, source_id, field_name, key_id, destination)
        return key_id, _seal(self.keys[key_id], plaintext, aad)

    def decrypt(self, blob: bytes, *, key_id: str, workspace_id: str, source_id: str, field_name: str,
                destination: str | None) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise VaultError("unknown key id")
        return _open(key, blob, field_aad(workspace_id, source_id, field_name, key_id, destination))


log = logging.getLogger("keyrelay.vault")


class KeyVault:
    def __init__(self, store: SqlKeyRingStore, master: bytes | None, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._master = master
        self._clock = clock
        self._ring = KeyRing()
        self._sealed_reason: str | None = "not loaded"

    @property
    def sealed(self) -> bool:
        return self._sealed_reason is not None

    @property
    def sealed_reason(self) -> str | None:
        return self._sealed_reason

    async def load(self, *, may_create: bool) -> None:
        """Unwrap every key of the ring; create the first key when the ring is empty and `may_create`."""
        rows = await self._store.keys()
        if not rows:
            if self._master is None or not may_create:
                self._sealed_reason = "no master key"
                return
            key_id = str(uuid.uuid4())
            await self._store.add_first_key(key_id=key_id, wrapped=wrap_key(self._master, key_id,
                                                                                 new_key()),
                                            now=self._clock())
            rows = await self._store.keys()
        if self._master is None:
            self._sealed_reason = "master key missing"
            return
        ring = KeyRing()
        try:
            for row in rows:
                ring.keys[row.id] = unwrap_key(self._master, row.id, row.wrapped)
                if row.status == "active":
                    ring.active_id = row.id
        except VaultError:
            self._sealed_reason = "master key does not match this database"
            log.error("vault sealed: the master key does not match the stored key ring")
            return
        self._ring = ring
        self._sealed_reason = None

    def _require_open(self) -> None:
        if self._sealed_reason is not None:
            raise Sealed("The vault is sealed: the master key is missing or wrong")

    async def seal(self, *, workspace_id: str, source_id: str, destination: str,
                   fields: Mapping[str, Any]) -> list[SealedField]:
        """Encrypt each field under the newest active key, bound to the source and its `destination`."""
        self._require_open()
        await self.load(may_create=False)  # writes are rare: always encrypt under the newest active key
        self._require_open()
        out = []
        for name, value in fields.items():
            key_id, blob = self._ring.encrypt(json.dumps(value).encode(), workspace_id=workspace_id,
                                              source_id=source_id, field_name=name, destination=destination)
            out.append(SealedField(name, key_id, blob, destination))
        return out

    async def open(self, *, workspace_id: str, source_id: str, destination: str,
                   sealed: Sequence[SealedField]) -> Credentials:
        """Decrypt the fields for a request to `destination`. A field sealed for another destination, under the
        legacy binding, or altered fails: 409 `credentials_unusable` (never a partial set of fields)."""
        self._require_open()
        if any(f.key_id not in self._ring.keys for f in sealed):
            await self.load(may_create=False)  # another process rotated: refresh the ring
            self._require_open()
        fields: dict[str, Any] = {}
        for f in sealed:
            if f.destination != destination:
                why = "was stored before credentials were bound to destinations" if f.destination is None else \
                    "was stored for another destination"
                log.error("credential field %s of source %s %s: refused", f.field, source_id, why)
                raise _unusable()
            try:
                plain = self._ring.decrypt(f.ciphertext, key_id=f.key_id, workspace_id=workspace_id,
                                           source_id=source_id, field_name=f.field, destination=destination)
            except VaultError:
                log.error("credential field %s of source %s failed to decrypt: refused", f.field, source_id)
                raise _unusable() from None
            fields[f.field] = seal_strings(json.loads(plain))
        return Credentials(fields)

    async def seal_record(self, context: Sequence[str], plaintext: bytes) -> SealedRecord:
        """Encrypt a record under the active key, bound to `context` (e.g. approval, its id, what it holds)."""
        self._require_open()
        key_id = self._ring.active_id
        if key_id is None:
            raise VaultError("no active key")
        return SealedRecord(key_id, _seal(self._ring.keys[key_id], plaintext, record_aad(context, key_id)))

    async def open_record(self, context: Sequence[str], sealed: SealedRecord) -> bytes:
        """Decrypt a record sealed for exactly this `context`; VaultError if it was altered, moved or rebound."""
        self._require_open()
        if sealed.key_id not in self._ring.keys:
            await self.load(may_create=False)  # another process rotated: refresh the ring
            self._require_open()
        key = self._ring.keys.get(sealed.key_id)
        if key is None:
            raise VaultError("unknown key id")
        return _open(key, sealed.blob, record_aad(context, sealed.key_id))

    async def rotate(self) -> Rotation:
        """Add a new active key and re-encrypt every credential under it, keeping each one's binding. Rows that
        do not decrypt (legacy or altered) are left as they are and counted; their key stays in the ring."""
        self._require_open()
        assert self._master is not None
        await self._store.drop_unused_retired_keys()  # keys retired by an earlier rotation and now unused
        key_id = str(uuid.uuid4())
        await self._store.activate_new_key(key_id=key_id, wrapped=wrap_key(self._master, key_id,
                                                                                 new_key()),
                                           now=self._clock())
        await self.load(may_create=False)
        done = skipped = 0
        after: tuple[str, str] | None = None
        for _ in range(100_000):  # bounded: one pass over the table, 200 rows at a time
            rows = await self._store.secrets_not_under(key_id, after=after)
            if not rows:
                break
            after = (rows[-1].source_id, rows[-1].field)
            for row in rows:
                if row.destination is None:
                    skipped += 1
                    continue
                try:
                    plain = self._ring.decrypt(row.ciphertext, key_id=row.key_id, workspace_id=row.workspace_id,
                                               source_id=row.source_id, field_name=row.field,
                                               destination=row.destination)
                except VaultError:
                    log.error("credential field %s of source %s failed to decrypt: not rotated", row.field,
                              row.source_id)
                    skipped += 1
                    continue
                _, blob = self._ring.encrypt(plain, workspace_id=row.workspace_id, source_id=row.source_id,
                                             field_name=row.field, destination=row.destination)
                done += await self._store.replace_secret(row, key_id=key_id, ciphertext=blob,
                                                         destination=row.destination)
        done_elsewhere, skipped_elsewhere = await self._rotate_elsewhere(key_id)
        return Rotation(done + done_elsewhere, skipped + skipped_elsewhere)

    async def _rotate_elsewhere(self, key_id: str) -> tuple[int, int]:
        """Re-encrypt the values keyrelay seals for itself (store/keyring.py: SEALED_ELSEWHERE) under `key_id`."""
        done = skipped = 0
        after: tuple[str, str] | None = None
        for _ in range(100_000):
            rows = await self._store.elsewhere_not_under(key_id, after=after)
            if not rows:
                break
            after = (rows[-1].table, rows[-1].source_id)
            for row in rows:
                assert row.destination is not None
                try:
                    plain = self._ring.decrypt(row.ciphertext, key_id=row.key_id, workspace_id=row.workspace_id,
                                               source_id=row.source_id, field_name=row.field,
                                               destination=row.destination)
                except VaultError:
                    log.error("sealed %s of %s row %s failed to decrypt: not rotated", row.field, row.table,
                              row.source_id)
                    skipped += 1
                    continue
                _, blob = self._ring.encrypt(plain, workspace_id=row.workspace_id, source_id=row.source_id,
                                             field_name=row.field, destination=row.destination)
                done += await self._store.replace_secret(row, key_id=key_id, ciphertext=blob,
                                                         destination=row.destination)
        return done, skipped

    async def rebind_legacy(self, destination_of: Callable[[str, Mapping[str, Any]], str]) -> Rotation:
        """Re-seal every ciphertext written before destinations were bound, to its source's destination as the
        database names it now (the upgrade trusts the database once, at the first start after it). Returns how
        many were re-sealed and how many did not decrypt (those stay unusable)."""
        self._require_open()
        await self.load(may_create=False)
        done = skipped = 0
        after: tuple[str, str] | None = None
        for _ in range(100_000):
            rows = await self._store.legacy_secrets(after=after)
            if not rows:
                break
            after = (rows[-1].source_id, rows[-1].field)
            for row in rows:
                try:
                    plain = self._ring.decrypt(row.ciphertext, key_id=row.key_id, workspace_id=row.workspace_id,
                                               source_id=row.source_id, field_name=row.field, destination=None)
                except VaultError:
                    log.error("credential field %s of source %s failed to decrypt: left unusable", row.field,
                              row.source_id)
                    skipped += 1
                    continue
                destination = destination_of(row.connector, json.loads(row.config))
                key_id, blob = self._ring.encrypt(plain, workspace_id=row.workspace_id, source_id=row.source_id,
                                                  field_name=row.field, destination=destination)
                done += await self._store.replace_secret(row, key_id=key_id, ciphertext=blob,
                                                         destination=destination)
        return Rotation(done, skipped)


@dataclass(frozen=True)
class Rotation:
    """What a re-encryption pass did: rows re-encrypted, and rows left as they were because they did not decrypt."""

    reencrypted: int
    unreadable: int


def _unusable() -> CredentialsUnusable:
    return CredentialsUnusable("The source's stored credentials cannot be used for its current destination; "
                               "store the source's credentials again")

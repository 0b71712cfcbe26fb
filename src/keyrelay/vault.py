"""The Vault port: key ring loading, sealed state, sealing/opening credential fields and online rotation.

Start-up rules (security.md rule 8, bar 19): a database that already has keys is never given a new master key;
a missing or wrong master key leaves the vault *sealed* (credential-using requests get 503 `sealed`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keyrelay import crypto
from keyrelay.errors import InternalError, Sealed
from keyrelay.model import Credentials, SealedField
from keyrelay.store.vault import SqlVaultStore

log = logging.getLogger("keyrelay.vault")


class KeyVault:
    def __init__(self, store: SqlVaultStore, master: bytes | None, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._master = master
        self._clock = clock
        self._ring = crypto.KeyRing()
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
            await self._store.add_first_key(key_id=key_id, wrapped=crypto.wrap_key(self._master, key_id,
                                                                                 crypto.new_key()),
                                            now=self._clock())
            rows = await self._store.keys()
        if self._master is None:
            self._sealed_reason = "master key missing"
            return
        ring = crypto.KeyRing()
        try:
            for row in rows:
                ring.keys[row.id] = crypto.unwrap_key(self._master, row.id, row.wrapped)
                if row.status == "active":
                    ring.active_id = row.id
        except crypto.VaultError:
            self._sealed_reason = "master key does not match this database"
            log.error("vault sealed: the master key does not match the stored key ring")
            return
        self._ring = ring
        self._sealed_reason = None

    def _require_open(self) -> None:
        if self._sealed_reason is not None:
            raise Sealed("The vault is sealed: the master key is missing or wrong")

    async def seal(self, *, workspace_id: str, source_id: str, fields: Mapping[str, Any]) -> list[SealedField]:
        self._require_open()
        await self.load(may_create=False)  # writes are rare: always encrypt under the newest active key
        self._require_open()
        out = []
        for name, value in fields.items():
            key_id, blob = self._ring.encrypt(json.dumps(value).encode(), workspace_id=workspace_id,
                                              source_id=source_id, field_name=name)
            out.append(SealedField(name, key_id, blob))
        return out

    async def open(self, *, workspace_id: str, source_id: str, sealed: Sequence[SealedField]) -> Credentials:
        self._require_open()
        if any(f.key_id not in self._ring.keys for f in sealed):
            await self.load(may_create=False)  # another process rotated: refresh the ring
            self._require_open()
        fields: dict[str, Any] = {}
        for f in sealed:
            try:
                plain = self._ring.decrypt(f.ciphertext, key_id=f.key_id, workspace_id=workspace_id,
                                           source_id=source_id, field_name=f.field)
            except crypto.VaultError:
                log.error("credential field %s of source %s failed to decrypt", f.field, source_id)
                raise InternalError("A stored credential could not be decrypted") from None
            fields[f.field] = json.loads(plain)
        return Credentials(fields)

    async def rotate(self) -> int:
        """Add a new active key and re-encrypt every credential under it; returns rows re-encrypted."""
        self._require_open()
        assert self._master is not None
        await self._store.drop_unused_retired_keys()  # keys retired by an earlier rotation and now unused
        key_id = str(uuid.uuid4())
        await self._store.activate_new_key(key_id=key_id, wrapped=crypto.wrap_key(self._master, key_id,
                                                                                 crypto.new_key()),
                                           now=self._clock())
        await self.load(may_create=False)
        done = 0
        for _ in range(100_000):  # bounded: each pass re-encrypts up to 200 rows
            rows = await self._store.secrets_not_under(key_id)
            if not rows:
                break
            for row in rows:
                plain = self._ring.decrypt(row.ciphertext, key_id=row.key_id, workspace_id=row.workspace_id,
                                           source_id=row.source_id, field_name=row.field)
                _, blob = self._ring.encrypt(plain, workspace_id=row.workspace_id, source_id=row.source_id,
                                             field_name=row.field)
                done += await self._store.replace_secret(row, key_id=key_id, ciphertext=blob)
        return done

"""Operators' OAuth clients, one row per connector; the client secret is stored sealed."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.oauth_clients import OAuthClient
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.tables import oauth_clients


def _client(r: Any) -> OAuthClient:
    return OAuthClient(
        connector=r.connector, client_id=r.client_id,
        secret=SealedField("client_secret", r.key_id, bytes(r.client_secret), internal_destination("oauth_clients")),
        scopes=None if r.scopes is None else tuple(json.loads(r.scopes)), authorize_url=r.authorize_url,
        token_url=r.token_url, created_at=r.created_at, updated_at=r.updated_at)


class SqlOAuthClientStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put_client(self, client: OAuthClient) -> OAuthClient:
        """Insert or replace the connector's client in one transaction."""
        values = {"client_id": client.client_id, "key_id": client.secret.key_id,
                  "client_secret": client.secret.ciphertext,
                  "scopes": None if client.scopes is None else json.dumps(list(client.scopes)),
                  "authorize_url": client.authorize_url, "token_url": client.token_url,
                  "updated_at": client.updated_at}
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(oauth_clients).where(
                oauth_clients.c.connector == client.connector).values(**values))
            if not res.rowcount:
                await conn.execute(sa.insert(oauth_clients).values(connector=client.connector,
                                                                   created_at=client.created_at, **values))
        found = await self.get_client(client.connector)
        assert found is not None
        return found

    async def get_client(self, connector: str) -> OAuthClient | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(oauth_clients).where(oauth_clients.c.connector == connector))).first()
        return None if r is None else _client(r)

    async def list_clients(self) -> list[OAuthClient]:
        async with self._engine.connect() as conn:
            return [_client(r) for r in await conn.execute(sa.select(oauth_clients).order_by(
                oauth_clients.c.connector))]

    async def delete_client(self, connector: str) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(oauth_clients).where(oauth_clients.c.connector == connector))
        return bool(res.rowcount)

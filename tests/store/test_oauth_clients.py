"""Operators' OAuth clients on both backends (store/oauth_clients.py): one row per connector, replaced in place."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.manage.oauth_clients import OAuthClient
from keyrelay.model import SealedField, internal_destination
from keyrelay.store.oauth_clients import SqlOAuthClientStore

DEST = internal_destination("oauth_clients")


def _client(**kw: object) -> OAuthClient:
    values: dict[str, object] = {
        "connector": "github", "client_id": "Iv1.abc",
        "secret": SealedField("client_secret", "k1", b"\x01sealed", DEST),
        "scopes": ("repo",), "authorize_url": None, "token_url": "https://ghe.example.com/login/oauth/access_token",
        "created_at": 1.0, "updated_at": 1.0}
    values.update(kw)
    return OAuthClient(**values)  # type: ignore[arg-type]


async def test_a_client_is_put_read_replaced_and_deleted(engine: AsyncEngine) -> None:
    store = SqlOAuthClientStore(engine)
    assert await store.put_client(_client()) == _client()
    replaced = _client(client_id="Iv1.new", scopes=None, secret=SealedField("client_secret", "k2", b"\x02", DEST),
                       created_at=5.0, updated_at=5.0)
    got = await store.put_client(replaced)
    assert (got.client_id, got.scopes, got.secret.key_id, got.created_at, got.updated_at) == \
        ("Iv1.new", None, "k2", 1.0, 5.0)
    await store.put_client(_client(connector="hubspot"))
    assert [c.connector for c in await store.list_clients()] == ["github", "hubspot"]
    assert await store.delete_client("github") and not await store.delete_client("github")
    assert await store.get_client("github") is None

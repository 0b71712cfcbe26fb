"""Operators' OAuth clients (manage/oauth_clients.py) on the real store and vault: the secret is sealed and
write-only, URL overrides follow the same rules as the declared URLs, and the token URL passes the SSRF guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keyrelay.errors import InvalidRequest, NotFound, SsrfBlocked
from keyrelay.manage.oauth_clients import OAuthClientService
from keyrelay.store.oauth_clients import SqlOAuthClientStore
from support.connect import LOOPBACK, Parts, assembled

SECRET = "oauth-client-secret-canary-7d2e"


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Parts]:
    async with assembled(tmp_path) as parts:
        yield parts


def _svc(p: Parts) -> OAuthClientService:
    return OAuthClientService(store=SqlOAuthClientStore(p.engine), vault=p.vault, catalog=p.catalog, clock=p.clock,
                              allow=LOOPBACK)


async def test_a_client_is_stored_with_its_secret_sealed_and_replaced_by_a_new_put(p: Parts) -> None:
    svc = _svc(p)
    first = await svc.put("github", {"client_id": "Iv1.abc", "client_secret": SECRET})
    assert (first.client_id, first.scopes, first.authorize_url) == ("Iv1.abc", None, None)
    async with p.engine.connect() as conn:
        rows = "".join(repr(tuple(r)) for r in await conn.execute(sa.text("SELECT * FROM oauth_clients")))
    assert "Iv1.abc" in rows and SECRET not in rows
    pc = await svc.for_connector("github")
    assert pc.secret == SECRET and pc.scope == "repo read:org read:user"
    assert SECRET not in repr(pc) and SECRET not in repr(pc.client)
    p.clock.now += 10
    second = await svc.put("github", {"client_id": "Iv1.new", "client_secret": "other", "scopes": ["repo"],
                                      "authorize_url": "https://ghe.example.com/login/oauth/authorize",
                                      "token_url": "https://ghe.example.com/login/oauth/access_token"})
    assert (second.created_at, second.updated_at) == (first.created_at, p.clock.now)
    pc = await svc.for_connector("github")
    assert (pc.secret, pc.scope, pc.authorize_url({})) == \
        ("other", "repo", "https://ghe.example.com/login/oauth/authorize")
    assert [c.connector for c in await svc.list_clients()] == ["github"]
    await svc.delete("github")
    with pytest.raises(NotFound):
        await svc.get("github")
    with pytest.raises(NotFound):
        await svc.delete("github")


async def test_shopify_scopes_are_joined_by_commas_and_its_urls_name_the_shop(p: Parts) -> None:
    svc = _svc(p)
    await svc.put("shopify", {"client_id": "c", "client_secret": "s"})
    pc = await svc.for_connector("shopify")
    assert pc.scope == "read_customers,read_orders,read_products"
    assert pc.token_url({"shop": "acme"}) == "https://acme.myshopify.com/admin/oauth/access_token"
    with pytest.raises(InvalidRequest):
        pc.token_url({"shop": "evil.com/x"})


@pytest.mark.parametrize("connector", ["stripe", "http", "s3", "nope"])
async def test_a_connector_without_a_provider_takes_no_client(p: Parts, connector: str) -> None:
    with pytest.raises(NotFound):
        await _svc(p).put(connector, {"client_id": "c", "client_secret": "s"})


@pytest.mark.parametrize("body,field", [
    ({"client_secret": "s"}, "client_id"), ({"client_id": "c"}, "client_secret"),
    ({"client_id": "c", "client_secret": "s\r\nX: 1"}, "client_secret"),
    ({"client_id": "c", "client_secret": "s", "scopes": "repo"}, "scopes"),
    ({"client_id": "c", "client_secret": "s", "scopes": ["a b"]}, "scopes"),
    ({"client_id": "c", "client_secret": "s", "authorize_url": "javascript:alert(1)"}, "authorize_url"),
    ({"client_id": "c", "client_secret": "s", "token_url": "https://u:p@ghe.example.com/t"}, "token_url"),
    ({"client_id": "c", "client_secret": "s", "token_url": "https://{tenant}.example.com/t"}, "token_url"),
    ({"client_id": "c", "client_secret": "s", "redirect_uri": "https://x"}, "redirect_uri"),
])
async def test_bad_client_input_names_the_field_never_the_secret(p: Parts, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        await _svc(p).put("github", body)
    assert err.value.field == field and "s\r\n" not in err.value.message


@pytest.mark.parametrize("url", ["http://10.0.0.7/token", "http://169.254.169.254/token", "http://[::1]/token"])
async def test_a_token_url_override_must_pass_the_ssrf_guard(p: Parts, url: str) -> None:
    with pytest.raises(SsrfBlocked) as err:
        await _svc(p).put("github", {"client_id": "c", "client_secret": "s", "token_url": url})
    assert err.value.field == "token_url"


async def test_a_shop_placeholder_is_allowed_where_the_provider_declares_one(p: Parts) -> None:
    made = await _svc(p).put("shopify", {"client_id": "c", "client_secret": "s",
                                         "token_url": "https://{shop}.myshopify.com/admin/oauth/access_token"})
    assert made.token_url == "https://{shop}.myshopify.com/admin/oauth/access_token"

"""Connect sessions (manage/connect.py) on the real stores with a clock the test moves: what a session may say
(redirects only under the allowlist, origins only as origins, presets only as valid config), that its token is
stored as a digest, works for one workspace, expires, and is spent once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keyrelay.errors import InvalidRequest, NotFound, SsrfBlocked
from keyrelay.manage.connect import (
    ConnectSession,
    Unusable,
    check_redirect_url,
    parse_allowlist,
    parse_origins,
)
from keyrelay.model import Caller, CallerKind
from support.connect import ADMIN, Parts, assembled

ALLOW = parse_allowlist("https://app.example.com/back, http://127.0.0.1:3000")


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Parts]:
    async with assembled(tmp_path) as parts:
        yield parts


@pytest.mark.parametrize("url,out", [
    ("https://app.example.com/back", "https://app.example.com/back"),
    ("https://app.example.com/back/", "https://app.example.com/back"),
    ("https://app.example.com/back/settings?tab=apps", "https://app.example.com/back/settings?tab=apps"),
    ("https://APP.example.com:443/back", "https://app.example.com/back"),
    ("http://127.0.0.1:3000/anything", "http://127.0.0.1:3000/anything"),
])
def test_a_redirect_under_an_allowed_prefix_is_kept(url: str, out: str) -> None:
    assert check_redirect_url(url, ALLOW) == out


@pytest.mark.parametrize("url", [
    "https://app.example.com/backdoor", "https://app.example.com/", "https://app.example.com",
    "http://app.example.com/back", "https://app.example.com:8443/back", "https://app.example.com.evil.com/back",
    "https://app.example.com@evil.com/back", "https://evil.com/https://app.example.com/back", "//evil.com/back",
    "https://app.example.com/back#frag", "https://app.example.com/back/../../admin",
    "https://app.example.com/back/%2e%2e/admin", "https://app.example.com\\@evil.com/back",
    "https:/\\evil.com/back", "javascript:alert(1)//https://app.example.com/back", " https://app.example.com/back",
    "https://app.example.com/back?x=1 2", "http://127.0.0.1:3001/", "http://127.0.0.2:3000/", "", 42, None,
])
def test_anything_else_is_refused_never_an_open_redirect(url: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_redirect_url(url, ALLOW)
    assert err.value.field == "redirect_url"


def test_an_empty_allowlist_allows_no_redirect() -> None:
    with pytest.raises(InvalidRequest):
        check_redirect_url("https://app.example.com/back", parse_allowlist(""))


@pytest.mark.parametrize("value,out", [
    (["https://app.example.com"], ("https://app.example.com",)),
    (["https://App.Example.com/", "http://127.0.0.1:3000"], ("https://app.example.com", "http://127.0.0.1:3000")),
    (["https://app.example.com:443"], ("https://app.example.com",)),
    (None, ()),
])
def test_allowed_origins_are_origins(value: Any, out: tuple[str, ...]) -> None:
    assert parse_origins(value) == out


@pytest.mark.parametrize("value", [["https://app.example.com/path"], ["*"], ["https://*.example.com"], ["null"],
                                   ["https://app.example.com?x"], ["https://u@app.example.com"], ["ftp://x.example"],
                                   ["'self'"], ["https://a.example https://b.example"], "https://app.example.com",
                                   ["https://x.example"] * 21])
def test_anything_but_an_origin_is_refused(value: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_origins(value)
    assert err.value.field == "allowed_origins"


async def test_a_session_for_a_new_name_creates_the_workspace_and_offers_the_checkable_connectors(p: Parts) -> None:
    made = await p.connect.create(ADMIN, {"workspace": "acme"})
    ws = await p.workspaces.named("acme", create=False)
    s = made.session
    assert (s.workspace_id, s.status, s.expires_at - s.created_at) == (ws.id, "pending", 1800)
    assert "stripe" in s.connectors and "github" in s.connectors and "http" not in s.connectors
    again = await p.connect.create(ADMIN, {"workspace": ws.id, "connectors": ["stripe"], "expires_in": 60})
    assert again.session.workspace_id == ws.id and again.session.connectors == ("stripe",)
    assert made.token.startswith("krc_") and made.token != again.token


@pytest.mark.parametrize("body,field", [
    ({"connectors": ["nope"]}, "connectors"), ({"connectors": ["http"]}, "connectors"),
    ({"connectors": []}, "connectors"), ({"connectors": ["<script>alert(1)</script>"]}, "connectors"),
    ({"expires_in": 3601}, "expires_in"), ({"expires_in": 59}, "expires_in"), ({"expires_in": True}, "expires_in"),
    ({"redirect_url": "https://evil.com/"}, "redirect_url"), ({"allowed_origins": ["*"]}, "allowed_origins"),
    ({"connectors": ["stripe"], "config": {"github": {}}}, "config.github"),
    ({"connectors": ["stripe"], "config": {"stripe": {"nope": 1}}}, "config.stripe"),
    ({"connectors": ["github"], "config": {"github": {"owner": "a/b"}}}, "config.github.owner"),
    ({"workspace": ""}, "workspace"),
])
async def test_bad_session_input_names_the_field(p: Parts, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        await p.connect.create(ADMIN, {"workspace": "acme", **body})
    assert err.value.field == field
    assert "<script>" not in err.value.message


async def test_a_preset_base_url_must_pass_the_ssrf_guard(p: Parts) -> None:
    with pytest.raises(SsrfBlocked) as err:
        await p.connect.create(ADMIN, {"workspace": "acme", "connectors": ["stripe"],
                                       "config": {"stripe": {"base_url": "http://169.254.169.254/latest"}}})
    assert err.value.field == "config.stripe.base_url"


async def test_the_token_is_stored_only_as_a_digest(p: Parts) -> None:
    made = await p.connect.create(ADMIN, {"workspace": "acme"})
    async with p.engine.connect() as conn:
        rows = [repr(tuple(r)) for r in await conn.execute(sa.text("SELECT * FROM connect_sessions"))]
    assert rows and made.token not in "".join(rows) and made.token[4:] not in "".join(rows)
    assert p.hasher.digest(made.token) in "".join(rows)


async def test_a_token_works_until_it_expires_or_is_spent(p: Parts) -> None:
    made = await p.connect.create(ADMIN, {"workspace": "acme", "expires_in": 600})
    assert (await p.connect.lookup(made.token)).id == made.session.id
    for bad in ("krc_" + "A" * 43, made.token + "x", made.token[:-1], "kra_" + made.token[4:], ""):
        with pytest.raises(Unusable) as err:
            await p.connect.lookup(bad)
        assert err.value.reason == "unknown"
    assert await p.store.claim_session(made.session.id, now=p.clock.now)
    assert not await p.store.claim_session(made.session.id, now=p.clock.now)  # spent once
    with pytest.raises(Unusable) as err:
        await p.connect.lookup(made.token)
    assert err.value.reason == "used"
    other = await p.connect.create(ADMIN, {"workspace": "acme", "expires_in": 600})
    p.clock.now += 600
    with pytest.raises(Unusable) as err:
        await p.connect.lookup(other.token)
    assert err.value.reason == "expired"
    assert not await p.store.claim_session(other.session.id, now=p.clock.now)


async def test_expired_sessions_are_announced_once(p: Parts) -> None:
    told: list[ConnectSession] = []
    p.connect.on_expired = told.append
    a = await p.connect.create(ADMIN, {"workspace": "acme", "expires_in": 60})
    await p.connect.create(ADMIN, {"workspace": "acme", "expires_in": 120})
    assert await p.connect.expire_due() == []
    p.clock.now += 60
    assert [s.id for s in await p.connect.expire_due()] == [a.session.id]
    assert await p.connect.expire_due() == [] and [s.status for s in told] == ["expired"]
    p.clock.now += 60
    await p.connect.expire_due()
    assert len(told) == 2


async def test_a_reconnect_session_offers_the_sources_own_connector_in_its_workspace(p: Parts) -> None:
    ws = await p.workspaces.create("acme")
    src = await p.sources.create_source(ADMIN, {"workspace_id": ws.id, "connector": "stripe", "name": "Stripe",
                                                "config": {}, "credentials": {"api_key": "sk_test_12345678"}})
    made = await p.connect.create(ADMIN, {"workspace": ws.id, "source_id": src.id})
    assert (made.session.connectors, made.session.source_id) == (("stripe",), src.id)
    with pytest.raises(InvalidRequest):
        await p.connect.create(ADMIN, {"workspace": ws.id, "source_id": src.id, "connectors": ["github"]})
    other = await p.workspaces.create("globex")
    with pytest.raises(NotFound):
        await p.connect.create(ADMIN, {"workspace": other.id, "source_id": src.id})


async def test_another_workspaces_session_is_not_found(p: Parts) -> None:
    made = await p.connect.create(ADMIN, {"workspace": "acme"})
    other = await p.workspaces.create("globex")
    tenant = Caller(kind=CallerKind.WORKSPACE, id="wst:x", workspace_id=other.id, scopes=frozenset())
    with pytest.raises(NotFound):
        await p.connect.get(tenant, made.session.id)
    with pytest.raises(NotFound):
        await p.connect.delete(tenant, made.session.id)
    assert await p.connect.list_sessions(tenant, workspace_id=None, status=None) == []
    await p.connect.delete(ADMIN, made.session.id)
    with pytest.raises(Unusable):
        await p.connect.lookup(made.token)


async def test_the_result_url_carries_the_outcome(p: Parts) -> None:
    made = await p.connect.create(ADMIN, {"workspace": "acme", "redirect_url": "https://app.example.com/back?x=1"})
    s = made.session
    assert s.result_url(status="connected", source_id="src-1") == \
        f"https://app.example.com/back?x=1&connect_session={s.id}&status=connected&source_id=src-1"
    assert s.result_url(status="cancelled", source_id=None) == \
        f"https://app.example.com/back?x=1&connect_session={s.id}&status=cancelled"

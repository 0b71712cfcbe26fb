"""OAuth2 sources end to end (docs/security.md): real keyrelay servers in front of the fake token
endpoint and an upstream that accepts only issued, unexpired access tokens."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.vault import new_key
from support.canary import find_in_files
from support.keyrelay import Admin, KeyrelayServer, logged, make_settings
from support.postgres import PostgresServer
from support.upstream import ISSUED_TOKEN, FakeUpstream

SECRET = "oauth-client-secret-9b7e41"


@pytest.fixture
def kr_settings(tmp_path: Path) -> dict[str, Any]:
    return {"data_dir": tmp_path / "data", "workspace_max_concurrency": 256}


@pytest.fixture
def api(upstream: FakeUpstream) -> FakeUpstream:
    upstream.require_auth = ISSUED_TOKEN
    return upstream


def _oauth2(up: FakeUpstream, **kw: Any) -> dict[str, Any]:
    value = {"token_url": up.url + "/oauth/token", "client_id": "cid", "client_secret": SECRET,
             "grant_type": "refresh_token", "refresh_token": up.issue_refresh_token()}
    value.update(kw)
    return value


class Gateway:
    """A workspace with one OAuth2 source and a proxy key, reached through one or more keyrelay servers."""

    def __init__(self, admin: Admin, up: FakeUpstream, oauth2: dict[str, Any]) -> None:
        self.admin = admin
        self.ws = admin.workspace("oauth-" + uuid.uuid4().hex[:8])
        self.src = admin.source(self.ws, upstream_url=up.url, credentials={"oauth2": oauth2})
        self.auth = {"Authorization": f"Bearer {admin.api_key(self.ws, ['proxy'])}"}

    def url(self, server: KeyrelayServer, tail: str = "/echo") -> str:
        return f"{server.url}/api/{self.ws}/proxy/echo{tail}"

    def get(self, server: KeyrelayServer, tail: str = "/echo") -> httpx.Response:
        return httpx.get(self.url(server, tail), headers=self.auth, timeout=30)

    def source(self) -> dict[str, Any]:
        r = self.admin.get(f"/api/v1/sources/{self.src['id']}")
        assert r.status_code == 200
        out: dict[str, Any] = r.json()
        return out

    async def burst(self, servers: list[KeyrelayServer], n: int) -> list[int]:
        """`n` concurrent GETs through each server; the status codes."""
        limits = httpx.Limits(max_connections=n * len(servers) + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            rs = await asyncio.gather(*(client.get(self.url(s), headers=self.auth)
                                        for s in servers for _ in range(n)))
        return [r.status_code for r in rs]


def _expire_tokens(up: FakeUpstream) -> None:
    """Let the current access token expire (issued with a 1 s lifetime), then issue long-lived ones slowly, so
    that every request arrives while the refresh is still in flight."""
    time.sleep(1.05)
    up.token_ttl = 3600
    up.token_delay = 0.5


def test_client_credentials_token_is_injected_and_redacted(kr: KeyrelayServer, admin: Admin,
                                                           api: FakeUpstream) -> None:
    gw = Gateway(admin, api, {"token_url": api.url + "/oauth/token", "client_id": "cid", "client_secret": SECRET,
                              "grant_type": "client_credentials"})
    r = gw.get(kr)
    assert r.status_code == 200, r.text
    token = api.requests[-1].header("Authorization")
    assert token is not None and token.startswith("Bearer at-")
    assert token.removeprefix("Bearer ") not in r.text and SECRET not in r.text and "[REDACTED]" in r.text
    assert gw.get(kr).status_code == 200 and api.token_calls == 1
    src = gw.source()
    assert (src["status"], src["credentials"]) == ("active", ["oauth2"])
    logs = logged(admin, 2, source_id=gw.src["id"])
    assert len(logs) == 2 and {e["path"] for e in logs} == {f"/api/{gw.ws}/proxy/echo/echo"}  # no token call


def test_expiry_and_an_upstream_401_each_cause_one_refresh(kr: KeyrelayServer, admin: Admin,
                                                           api: FakeUpstream) -> None:
    api.token_ttl = 2  # refreshed after half its lifetime
    gw = Gateway(admin, api, _oauth2(api))
    assert gw.get(kr).status_code == 200 and api.token_calls == 1
    time.sleep(1.1)
    api.token_ttl = 3600
    assert gw.get(kr).status_code == 200 and api.token_calls == 2
    api.revoke_access_tokens()
    r = httpx.post(gw.url(kr), headers=gw.auth, content=b"replayed body", timeout=30)
    assert r.status_code == 200 and r.json()["body"] == "replayed body"
    assert (api.token_calls, api.invalid_grants) == (3, 0)


def test_rotated_refresh_token_is_stored_before_use_and_encrypted(tmp_path: Path, api: FakeUpstream) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    first = _oauth2(api)
    with KeyrelayServer(settings) as server:
        admin = Admin(server.url)
        gw = Gateway(admin, api, first)
        assert gw.get(server).status_code == 200
        admin.close()
    assert not api.refresh_token_valid(first["refresh_token"])
    api.revoke_access_tokens()  # the restarted keyrelay must refresh, with the rotated refresh token
    with KeyrelayServer(make_settings(data_dir=tmp_path / "data")) as server:
        gw.admin = Admin(server.url)
        assert gw.get(server).status_code == 200
        gw.admin.close()
    assert (api.token_calls, api.invalid_grants) == (2, 0)
    files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("keyrelay.db")]
    assert files and find_in_files(files, [*api.issued_tokens, SECRET]) == []
    old = httpx.post(api.url + "/oauth/token", data={"grant_type": "refresh_token",
                                                     "refresh_token": first["refresh_token"]})
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"


def test_100_concurrent_requests_with_an_expired_token_make_one_token_call(kr: KeyrelayServer, admin: Admin,
                                                                           api: FakeUpstream) -> None:
    api.token_ttl = 1
    gw = Gateway(admin, api, _oauth2(api))
    assert gw.get(kr).status_code == 200
    _expire_tokens(api)
    calls = api.token_calls
    statuses = asyncio.run(gw.burst([kr], 100))
    assert statuses == [200] * 100
    assert (api.token_calls - calls, api.invalid_grants) == (1, 0)


@pytest.fixture
def two_servers(postgres: PostgresServer, tmp_path: Path) -> Iterator[list[KeyrelayServer]]:
    name = "kr_oauth_" + uuid.uuid4().hex[:10]
    postgres.create_database(name)
    key = base64.b64encode(new_key()).decode()
    common = {"database_url": postgres.sqlalchemy_url(name), "master_key": key, "workspace_max_concurrency": 256}
    with KeyrelayServer(make_settings(data_dir=tmp_path / "a", **common)) as a, \
            KeyrelayServer(make_settings(data_dir=tmp_path / "b", **common)) as b:
        yield [a, b]


def test_two_instances_on_one_postgres_database_make_one_token_call(two_servers: list[KeyrelayServer],
                                                                    api: FakeUpstream) -> None:
    a, b = two_servers
    admin = Admin(a.url)
    api.token_ttl = 1
    gw = Gateway(admin, api, _oauth2(api))
    assert gw.get(a).status_code == 200 and gw.get(b).status_code == 200  # b finds the token a stored
    _expire_tokens(api)
    calls = api.token_calls
    statuses = asyncio.run(gw.burst([a, b], 50))
    assert statuses == [200] * 100
    assert (api.token_calls - calls, api.invalid_grants) == (1, 0)
    admin.close()


def test_a_revoked_refresh_token_needs_reauth_until_new_credentials(kr: KeyrelayServer, admin: Admin,
                                                                    api: FakeUpstream) -> None:
    first = _oauth2(api)
    gw = Gateway(admin, api, first)
    assert gw.get(kr).status_code == 200
    api.revoke_refresh_tokens()
    api.revoke_access_tokens()
    r = gw.get(kr)  # 401 upstream -> refresh -> invalid_grant
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth_failed"
    for secret in (SECRET, first["refresh_token"], *api.issued_tokens):
        assert secret not in r.text
    assert gw.source()["status"] == "needs_reauth"
    calls = api.token_calls
    assert gw.get(kr).status_code == 502 and api.token_calls == calls  # fails fast, no token call
    r = admin.http.patch(f"/api/v1/sources/{gw.src['id']}", headers=admin.headers,
                         json={"credentials": {"oauth2": _oauth2(api)}})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert gw.get(kr).status_code == 200


def test_token_url_is_checked_when_a_source_is_written(kr: KeyrelayServer, admin: Admin, api: FakeUpstream) -> None:
    ws = admin.workspace("checks")
    body: dict[str, Any] = {"workspace_id": ws, "connector": "http", "name": "o", "slug": "o",
                            "config": {"upstream_url": api.url}}
    blocked = _oauth2(api, token_url="http://169.254.169.254/token")
    r = admin.post("/api/v1/sources", {**body, "credentials": {"oauth2": blocked}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "credentials.oauth2.token_url"
    r = admin.post("/api/v1/sources", {**body, "credentials": {"oauth2": _oauth2(api, refresh_token=None)}})
    assert r.status_code == 400 and r.json()["error"]["field"].startswith("credentials.oauth2")
    r = admin.post("/api/v1/sources", {**body, "credentials": {"oauth2_state": {"access_token": "x"}}})
    assert r.status_code == 400
    src = admin.source(ws, upstream_url=api.url, slug="ok", credentials={"oauth2": _oauth2(api)})
    r = admin.http.patch(f"/api/v1/sources/{src['id']}", headers=admin.headers,
                         json={"credentials": {"oauth2": blocked}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "credentials.oauth2.token_url"

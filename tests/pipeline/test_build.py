"""The outbound request (pipeline/build.py): an injected credential header always replaces an agent header of the
same name, in any letter case, on the gateway and the request API. A real keyrelay and a real loopback upstream
show what arrives."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

KEY = "stored-api-key-71c2"
STATIC = "stored-static-value-9e"


@pytest.fixture
def setup(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("inject")
    creds = {"api_key": {"value": KEY, "header": "X-Api-Key"}, "inject_headers": {"X-Tenant": STATIC}}
    # the allowlist lets the agent send these names at all: the injection must still win
    src = admin.source(ws, upstream_url=upstream.url, credentials=creds,
                       policy={"forward_headers": ["x-api-key", "x-tenant", "accept"]})
    return {"ws": ws, "src": src, "auth": {"Authorization": f"Bearer {admin.api_key(ws, ['proxy'])}"}}


def _only(upstream: FakeUpstream, name: str) -> list[str]:
    return [v for k, v in upstream.requests[-1].headers if k.lower() == name]


@pytest.mark.parametrize(("key_name", "tenant_name"), [("X-Api-Key", "X-Tenant"), ("x-api-key", "x-tenant"),
                                                       ("X-API-KEY", "X-TENANT"), ("x-Api-kEY", "X-tenant")])
def test_gateway_injection_replaces_an_agent_header_of_the_same_name(kr: KeyrelayServer, upstream: FakeUpstream,
                                                                     setup: dict[str, Any], key_name: str,
                                                                     tenant_name: str) -> None:
    headers = {**setup["auth"], key_name: "agent-chosen-key", tenant_name: "agent-chosen-tenant",
               "Accept": "application/json"}
    r = httpx.get(f"{kr.url}/api/{setup['ws']}/proxy/echo/echo", headers=headers)
    assert r.status_code == 200
    assert _only(upstream, "x-api-key") == [KEY]
    assert _only(upstream, "x-tenant") == [STATIC]
    assert upstream.requests[-1].header("accept") == "application/json"  # other allowed headers still pass


@pytest.mark.parametrize("key_name", ["X-Api-Key", "x-api-key", "X-API-KEY"])
def test_request_api_injection_replaces_an_agent_header_of_the_same_name(kr: KeyrelayServer, upstream: FakeUpstream,
                                                                         setup: dict[str, Any], key_name: str) -> None:
    body = {"method": "GET", "url": upstream.url + "/echo",
            "headers": {key_name: "agent-chosen-key", "x-TENANT": "agent-chosen-tenant"}}
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/{setup['src']['id']}/request", headers=setup["auth"], json=body)
    assert r.status_code == 200 and r.json()["status_code"] == 200
    assert _only(upstream, "x-api-key") == [KEY]
    assert _only(upstream, "x-tenant") == [STATIC]


def test_request_api_without_a_forward_list_still_cannot_override_the_injection(kr: KeyrelayServer, admin: Admin,
                                                                                upstream: FakeUpstream) -> None:
    ws = admin.workspace("named")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"api_key": {"value": KEY, "header": "X-Api-Key"}})
    auth = {"Authorization": f"Bearer {admin.api_key(ws, ['proxy'])}"}
    body = {"method": "GET", "url": upstream.url + "/echo", "headers": {"X-API-Key": "agent", "X-Trace": "t1"}}
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/{src['id']}/request", headers=auth, json=body)
    assert r.status_code == 200
    assert _only(upstream, "x-api-key") == [KEY] and upstream.requests[-1].header("x-trace") == "t1"

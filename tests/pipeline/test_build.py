"""The outbound request (pipeline/build.py): an injected credential header always replaces an agent header of the
same name, in any letter case, on the gateway and the request API. A real keyrelay and a real loopback upstream
show what arrives."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import httpx
import pytest

from keyrelay.model import BySlug, Credentials, Door, Inbound, Policy, Secret, Source, Tail, seal_strings
from keyrelay.pipeline import build, inject
from keyrelay.pipeline.inject import template
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


# --- secrets stay secrets along the whole path ---------------------------------------------------------------

PLAIN = {"bearer": "sk-bearer-PLAINTEXT-1", "key": "apikey-PLAINTEXT-2", "query": "qkey-PLAINTEXT-3",
         "password": "pw-PLAINTEXT-4", "static": "static-PLAINTEXT-5", "client": "client-PLAINTEXT-6",
         "refresh": "refresh-PLAINTEXT-7"}


def _forms(obj: object) -> list[str]:
    texts = [repr(obj), str(obj), json.dumps(obj, default=str), f"{obj}", f"{obj!r}"]
    with contextlib.suppress(TypeError):  # not serialisable without `default`: the error names only the type
        texts.append(json.dumps(obj))
    return texts


def _clean_of_plaintext(*objs: object) -> None:
    for obj in objs:
        for text in _forms(obj):
            for value in PLAIN.values():
                assert value not in text, (type(obj).__name__, text[:200])


def _sealed_credentials() -> Credentials:
    """Credentials as the vault hands them out: every string a Secret."""
    stored = {
        "bearer_token": PLAIN["bearer"],
        "api_key": {"value": PLAIN["query"], "query_param": "key"},
        "basic": {"username": "svc", "password": PLAIN["password"]},
        "inject_headers": {"X-Static": PLAIN["static"], "X-Key": PLAIN["key"]},
        "oauth2": {"token_url": "https://auth.example.com/token", "client_id": "cid", "grant_type": "refresh_token",
                   "client_secret": PLAIN["client"], "refresh_token": PLAIN["refresh"]},
    }
    return Credentials(seal_strings(stored))


def test_credentials_injection_and_outbound_never_show_a_plaintext() -> None:
    creds = _sealed_credentials()
    assert all(isinstance(v, Secret) for v in creds.fields["inject_headers"].values())
    source = Source(id="s", workspace_id="w", connector="http", name="n", slug="n",
                    config={"upstream_url": "https://api.example.com/v1"}, policy=Policy(), status="active",
                    credential_fields=tuple(creds.fields), created_at=0.0, updated_at=0.0)
    prep = build.prepare(source, creds.fields, default_base_url=None)
    inbound = Inbound(door=Door.GATEWAY, method="GET", path="/x", authorization=None, source=BySlug("w", "n"),
                      target=Tail("items", "a=1"), headers=((b"accept", b"*/*"),))
    out = build.build(inbound, source, prep, body=None)
    sent = dict(out.headers)
    assert "Authorization" not in sent  # oauth2 sets it per request, replacing basic's
    assert sent["X-Static"] == PLAIN["static"] and f"key={PLAIN['query']}" in out.url  # injected for real
    assert prep.injection.oauth2 is not None
    _clean_of_plaintext(creds, creds.fields, prep.injection, prep.injection.oauth2, out, prep)
    assert "X-Static" in repr(out) and "X-Key" in repr(prep.injection)  # names stay visible
    assert prep.redactor.contains(base64.b64encode(f"svc:{PLAIN['password']}".encode()))  # the redactor's input


def test_a_catalog_template_keeps_a_filled_in_secret_secret() -> None:
    creds = Credentials(seal_strings({"email": "agent@example.com", "api_token": PLAIN["key"]}))
    fields = template.credential_fields({"basic": {"username": "{email}/token", "password": "{api_token}"}},
                                        creds.fields, {"subdomain": "acme"})
    assert isinstance(fields["basic"]["password"], Secret) and isinstance(fields["basic"]["username"], Secret)
    _clean_of_plaintext(fields)
    injection = inject.injection_for(fields)
    assert injection.headers[0][1].startswith("Basic ")
    _clean_of_plaintext(injection)


@pytest.mark.parametrize("bad", [
    {"bearer_token": {"nested": PLAIN["bearer"]}},
    {"basic": {"username": PLAIN["password"]}},
    {"oauth2": {"grant_type": PLAIN["refresh"], "token_url": "https://a.example/t", "client_id": "c",
                "client_secret": PLAIN["client"]}},
    {"oauth2": {"grant_type": "client_credentials", "token_url": PLAIN["client"], "client_id": "c",
                "client_secret": PLAIN["client"]}},
])
def test_errors_on_the_injection_path_never_carry_a_plaintext(bad: dict[str, Any]) -> None:
    with pytest.raises(Exception) as info:
        inject.injection_for(seal_strings(bad))
    _clean_of_plaintext(info.value, info.value.args)

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

from keyrelay.errors import DestinationNotAllowed, InvalidRequest
from keyrelay.model import BySlug, Credentials, Door, Inbound, Policy, Secret, Source, Tail, Target, Url, seal_strings
from keyrelay.pipeline import build, inject
from keyrelay.pipeline.build import base_url_of, prepare
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


KEY_b = "sk_live_abcdef123456"

def _source(config: dict[str, Any] | None = None, policy: Policy | None = None) -> Source:
    return Source(id="s", workspace_id="w", connector="http", name="n", slug="s",
                  config={"upstream_url": "https://api.example.com/v1"} if config is None else config,
                  policy=policy or Policy(timeout_seconds=7.5), status="active", credential_fields=(),
                  created_at=0, updated_at=0)

def _inbound(target: Target | None, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: Any = None, content_length: int | None = None) -> Inbound:
    return Inbound(door=Door.GATEWAY, method=method, path="/p", authorization=None, source=BySlug("w", "s"),
                   target=target, headers=tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
                   body=body, content_length=content_length)

@pytest.mark.parametrize("config,default,expected", [
    ({"upstream_url": "https://a.test/x"}, None, "https://a.test/x"),
    ({"base_url": "https://b.test"}, "https://default.test", "https://b.test"),  # an override wins
    ({"subdomain": "acme"}, "https://{subdomain}.zendesk.test/api", "https://acme.zendesk.test/api"),
])
def test_the_base_url_comes_from_config_or_the_connectors_default(config: dict[str, Any], default: str | None,
                                                                 expected: str) -> None:
    assert base_url_of(_source(config), default) == expected

@pytest.mark.parametrize("config,default", [({}, None), ({}, "https://{subdomain}.test")])
def test_a_source_without_a_base_url_is_refused(config: dict[str, Any], default: str | None) -> None:
    with pytest.raises(InvalidRequest):
        base_url_of(_source(config), default)

def test_a_tail_lands_under_the_base_and_the_injected_query_replaces_the_agents() -> None:
    src = _source()
    prep = prepare(src, {"api_key": {"value": KEY_b, "query_param": "key"}}, default_base_url=None)
    out = build.build(_inbound(Tail("items/1", "a=1&key=agent-chosen")), src, prep, body=None)
    assert out.url == f"https://api.example.com/v1/items/1?a=1&key={KEY_b}"
    assert [s.reveal() for s in prep.injection.secrets] == [KEY_b] and out.timeout_seconds == 7.5

def test_an_injected_header_replaces_the_agents_header_of_the_same_name() -> None:
    src = _source()
    prep = prepare(src, {"bearer_token": KEY_b}, default_base_url=None)
    out = build.build(_inbound(Tail("x"), headers={"Authorization": "Bearer agent", "Accept": "application/json"}),
                src, prep, body=None)
    assert [v for k, v in out.headers if k.lower() == "authorization"] == [f"Bearer {KEY_b}"]
    assert ("accept", "application/json") in [(k.lower(), v) for k, v in out.headers]

def test_a_request_api_url_must_lie_under_the_base() -> None:
    src = _source()
    prep = prepare(src, {}, default_base_url=None)
    ok = build.build(_inbound(Url("https://api.example.com/v1/items?q=1")), src, prep, body=None)
    assert ok.url == "https://api.example.com/v1/items?q=1"
    for url in ("https://api.example.com/v2/items", "https://evil.test/v1/items", "http://api.example.com/v1/x"):
        with pytest.raises((DestinationNotAllowed, InvalidRequest)):
            build.build(_inbound(Url(url)), src, prep, body=None)

def test_a_request_api_call_forwards_the_headers_the_agent_named_unless_the_policy_narrows_them() -> None:
    prep = prepare(_source(), {}, default_base_url=None)
    headers = {"X-Trace": "t", "Stripe-Version": "1"}
    wide = build.build(_inbound(Url("https://api.example.com/v1/a"), headers=headers), _source(), prep, body=None)
    assert {k.lower() for k, _ in wide.headers} >= {"x-trace", "stripe-version"}
    narrow_src = _source(policy=Policy(forward_headers=frozenset({"x-trace"})))
    narrow = build.build(_inbound(Url("https://api.example.com/v1/a"), headers=headers), narrow_src, prep, body=None)
    assert {k.lower() for k, _ in narrow.headers} == {"x-trace"}

def test_a_request_without_a_target_is_refused() -> None:
    src = _source()
    with pytest.raises(InvalidRequest):
        build.build(_inbound(None), src, prepare(src, {}, default_base_url=None), body=None)

@pytest.mark.parametrize("method,headers,idempotent", [
    ("GET", {}, True), ("HEAD", {}, True), ("OPTIONS", {}, True), ("POST", {}, False), ("PUT", {}, False),
    ("DELETE", {}, False), ("POST", {"Idempotency-Key": "k1"}, True),
])
def test_only_safe_methods_or_an_idempotency_key_make_a_request_retryable(method: str, headers: dict[str, str],
                                                                         idempotent: bool) -> None:
    src = _source()
    out = build.build(_inbound(Tail("x"), method=method, headers=headers), src, prepare(src, {}, default_base_url=None),
                body=None)
    assert out.idempotent is idempotent

def test_a_streamed_body_keeps_its_declared_length() -> None:
    async def body() -> Any:
        yield b"abc"

    src = _source()
    prep = prepare(src, {}, default_base_url=None)
    out = build.build(_inbound(Tail("x"), method="PUT", content_length=3), src, prep, body=body())
    assert ("Content-Length", "3") in out.headers
    whole = build.build(_inbound(Tail("x"), method="PUT", content_length=3), src, prep, body=b"abc")
    assert not any(k.lower() == "content-length" for k, _ in whole.headers)  # the client sets it for bytes

def test_prepare_redacts_every_injected_secret_and_the_basic_pair() -> None:
    prep = prepare(_source(), {"basic": {"username": "u", "password": "pw-9f8e7d"},
                               "inject_headers": {"X-Tenant": "tenant-secret-1"}}, default_base_url=None)
    text = b"pw-9f8e7d tenant-secret-1 " + prep.injection.headers[-1][1].encode()
    redacted = prep.redactor.redact_bytes(text)
    assert b"pw-9f8e7d" not in redacted and b"tenant-secret-1" not in redacted
    assert prep.injection.headers[-1][1] not in redacted.decode()  # the whole `Basic ...` value too
    assert prep.header_names == frozenset({"authorization", "x-tenant"})

def test_a_catalog_connector_maps_its_fields_through_its_auth_template() -> None:
    src = _source({"base_url": "https://gong.test"})
    prep = prepare(src, {"access_key": "ak", "access_key_secret": "sec-123"}, default_base_url=None,
                   auth={"basic": {"username": "{access_key}", "password": "{access_key_secret}"}})
    assert [(u, pw.reveal()) for u, pw in prep.injection.basic] == [("ak", "sec-123")]
    assert "sec-123" in [s.reveal() for s in prep.injection.secrets]

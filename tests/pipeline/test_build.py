"""Steps 6-7 (pipeline/build.py): the outbound request is built from validated parts only, and the credential is
injected over anything the agent sent of the same name."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.errors import DestinationNotAllowed, InvalidRequest
from keyrelay.model import BySlug, Door, Inbound, Policy, Source, Tail, Target, Url
from keyrelay.pipeline.build import base_url_of, build, prepare

KEY = "sk_live_abcdef123456"


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
    prep = prepare(src, {"api_key": {"value": KEY, "query_param": "key"}}, default_base_url=None)
    out = build(_inbound(Tail("items/1", "a=1&key=agent-chosen")), src, prep, body=None)
    assert out.url == f"https://api.example.com/v1/items/1?a=1&key={KEY}"
    assert out.secrets == (KEY,) and out.timeout_seconds == 7.5


def test_an_injected_header_replaces_the_agents_header_of_the_same_name() -> None:
    src = _source()
    prep = prepare(src, {"bearer_token": KEY}, default_base_url=None)
    out = build(_inbound(Tail("x"), headers={"Authorization": "Bearer agent", "Accept": "application/json"}),
                src, prep, body=None)
    assert [v for k, v in out.headers if k.lower() == "authorization"] == [f"Bearer {KEY}"]
    assert ("accept", "application/json") in [(k.lower(), v) for k, v in out.headers]


def test_a_request_api_url_must_lie_under_the_base() -> None:
    src = _source()
    prep = prepare(src, {}, default_base_url=None)
    ok = build(_inbound(Url("https://api.example.com/v1/items?q=1")), src, prep, body=None)
    assert ok.url == "https://api.example.com/v1/items?q=1"
    for url in ("https://api.example.com/v2/items", "https://evil.test/v1/items", "http://api.example.com/v1/x"):
        with pytest.raises((DestinationNotAllowed, InvalidRequest)):
            build(_inbound(Url(url)), src, prep, body=None)


def test_a_request_api_call_forwards_the_headers_the_agent_named_unless_the_policy_narrows_them() -> None:
    prep = prepare(_source(), {}, default_base_url=None)
    headers = {"X-Trace": "t", "Stripe-Version": "1"}
    wide = build(_inbound(Url("https://api.example.com/v1/a"), headers=headers), _source(), prep, body=None)
    assert {k.lower() for k, _ in wide.headers} >= {"x-trace", "stripe-version"}
    narrow_src = _source(policy=Policy(forward_headers=frozenset({"x-trace"})))
    narrow = build(_inbound(Url("https://api.example.com/v1/a"), headers=headers), narrow_src, prep, body=None)
    assert {k.lower() for k, _ in narrow.headers} == {"x-trace"}


def test_a_request_without_a_target_is_refused() -> None:
    src = _source()
    with pytest.raises(InvalidRequest):
        build(_inbound(None), src, prepare(src, {}, default_base_url=None), body=None)


@pytest.mark.parametrize("method,headers,idempotent", [
    ("GET", {}, True), ("HEAD", {}, True), ("OPTIONS", {}, True), ("POST", {}, False), ("PUT", {}, False),
    ("DELETE", {}, False), ("POST", {"Idempotency-Key": "k1"}, True),
])
def test_only_safe_methods_or_an_idempotency_key_make_a_request_retryable(method: str, headers: dict[str, str],
                                                                         idempotent: bool) -> None:
    src = _source()
    out = build(_inbound(Tail("x"), method=method, headers=headers), src, prepare(src, {}, default_base_url=None),
                body=None)
    assert out.idempotent is idempotent


def test_a_streamed_body_keeps_its_declared_length() -> None:
    async def body() -> Any:
        yield b"abc"

    src = _source()
    prep = prepare(src, {}, default_base_url=None)
    out = build(_inbound(Tail("x"), method="PUT", content_length=3), src, prep, body=body())
    assert ("Content-Length", "3") in out.headers
    whole = build(_inbound(Tail("x"), method="PUT", content_length=3), src, prep, body=b"abc")
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
    assert prep.injection.basic == [("ak", "sec-123")] and "sec-123" in prep.injection.secrets

"""The request API: the URL must lie under the source's base URL; the envelope carries the answer, checked for
secrets as the agent reads it (after parsing)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.http.render import dumps
from keyrelay.pipeline.redact import Redactor
from keyrelay.request_api import envelope
from support.keyrelay import Admin, KeyrelayServer
from support.spellings import decodings, spelled
from support.upstream import FakeUpstream

KEY = "sk_test_canary_51H8"


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("sonar")
    src = admin.source(ws, upstream_url=upstream.url + "/v1", slug="api",
                       credentials={"api_key": {"value": KEY, "header": "X-Api-Key"}})
    token = admin.scoped_token("sonar")
    return {"url": f"{kr.url}/api/v1/sonar/apis/{src['id']}/request", "src": src,
            "auth": {"Authorization": f"Bearer {token}"}, "base": upstream.url + "/v1"}


def call(env: dict[str, Any], body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(env["url"], json=body, headers=env["auth"], timeout=20, **kw)


def test_get_under_the_base_returns_the_envelope(env: dict[str, Any], upstream: FakeUpstream) -> None:
    r = call(env, {"method": "GET", "url": env["base"] + "/status/201?x=1"})
    assert r.status_code == 200, r.text  # the request API itself answered; the upstream's status is inside
    out = r.json()
    assert set(out) == {"status_code", "headers", "response_body", "body"}
    # the fake upstream serves nothing under /v1: its own 404, text and all, comes back inside the envelope
    assert out["status_code"] == 404 and out["headers"]["content-type"].startswith("text/plain")
    assert out["response_body"] == "404: Not Found" and out["body"] is None
    seen = upstream.requests[-1]
    assert (seen.method, seen.raw_path, seen.header("X-Api-Key")) == ("GET", "/v1/status/201?x=1", KEY)
    assert KEY not in r.text


def test_a_url_outside_the_base_is_refused_before_any_traffic(env: dict[str, Any], upstream: FakeUpstream) -> None:
    r = call(env, {"method": "GET", "url": env["base"] + "/../v1/x"})
    assert r.status_code == 400  # dot segments are refused outright
    for url in (env["base"].replace("/v1", "") + "/echo", env["base"] + "x/echo", "http://127.0.0.2:9/v1/echo"):
        r = call(env, {"method": "GET", "url": url})
        assert r.status_code == 403 and r.json()["error"]["code"] == "destination_not_allowed", url
    assert upstream.requests == []


def test_request_reaches_the_upstream_with_the_key_injected(env: dict[str, Any], upstream: FakeUpstream) -> None:
    r = call(env, {"method": "POST", "url": env["base"] + "/items?customer=cus_1", "headers": {"X-Trace": "t1"},
                   "body": {"name": "x"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status_code"] == 404  # the fake upstream has no /v1/items: upstream errors come inside
    seen = upstream.requests[-1]
    assert seen.method == "POST" and seen.raw_path == "/v1/items?customer=cus_1"
    assert seen.header("X-Api-Key") == KEY and seen.header("X-Trace") == "t1"
    assert seen.header("Content-Type") == "application/json" and seen.body == b'{"name":"x"}'


def test_json_answers_are_parsed_into_body(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> None:
    ws = admin.workspace("sonar2")
    src = admin.source(ws, upstream_url=upstream.url, slug="root", credentials={"bearer_token": KEY})
    key = admin.api_key(ws, ["proxy"])
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/{src['id']}/request", headers={"Authorization": f"Bearer {key}"},
                   json={"method": "GET", "url": upstream.url + "/echo?a=1"})
    out = r.json()
    assert out["status_code"] == 200 and out["body"]["raw_path"] == "/echo?a=1"
    assert isinstance(out["response_body"], str) and out["headers"]["content-type"].startswith("application/json")
    assert KEY not in r.text


@pytest.mark.parametrize("body,field", [
    ({"method": "GET"}, "url"), ({"method": 5, "url": "x"}, "method"), ({"url": "x", "headers": [1]}, "headers"),
    ({"url": "x", "headers": {"a": 1}}, "headers"),
])
def test_bad_bodies_name_the_field(env: dict[str, Any], body: dict[str, Any], field: str,
                                   upstream: FakeUpstream) -> None:
    r = call(env, body)
    assert r.status_code == 400 and r.json()["error"]["field"] == field
    assert upstream.requests == []


def test_malformed_json_is_400(env: dict[str, Any]) -> None:
    r = httpx.post(env["url"], content=b"{nope", headers=env["auth"])
    assert r.status_code == 400 and r.json()["error"]["message"] == "Malformed JSON body"


def test_unknown_source_and_get_method(env: dict[str, Any], kr: KeyrelayServer) -> None:
    r = httpx.post(f"{kr.url}/api/v1/sonar/apis/nope/request", json={"url": "x"}, headers=env["auth"])
    assert r.status_code == 404
    r = httpx.get(env["url"], headers=env["auth"])
    assert r.status_code == 405


def test_another_workspace_token_sees_404(env: dict[str, Any], admin: Admin, upstream: FakeUpstream) -> None:
    other = admin.scoped_token("elsewhere")
    r = httpx.post(env["url"], json={"url": env["base"] + "/x"}, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Source not found"
    assert upstream.requests == []


def test_always_dropped_headers_are_not_forwarded(env: dict[str, Any], upstream: FakeUpstream) -> None:
    call(env, {"url": env["base"] + "/x", "headers": {"Authorization": "Bearer stolen", "Host": "evil.test",
                                                     "X-Forwarded-For": "1.1.1.1", "X-Ok": "1"}})
    seen = {k.lower(): v for k, v in upstream.requests[-1].headers}
    assert "authorization" not in seen and seen["host"].startswith("127.0.0.1") and "x-forwarded-for" not in seen
    assert seen["x-ok"] == "1"


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in [k, *_strings(v)]]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


@settings(max_examples=300, deadline=None)
@given(case=spelled(), cuts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
       where=st.sampled_from(["value", "key", "nested"]))
def test_property_the_envelope_hands_on_no_secret(case: tuple[str, str], cuts: list[int], where: str) -> None:
    """The upstream body arrives in random chunks through the streaming redactor, then the envelope parses it:
    no string of what the agent receives (keys, values, headers, response_body) decodes to the secret."""
    secret, spelling = case
    inner = {"value": '{"got": "' + spelling + '"}', "key": '{"' + spelling + '": 1}',
             "nested": '{"raw": ' + json.dumps('{"got": "' + spelling + '"}') + "}"}[where]
    data = inner.encode()
    r = Redactor([secret])
    s, out, i, k = r.stream(), [], 0, 0
    while i < len(data):
        out.append(s.feed(data[i:i + cuts[k % len(cuts)]]))
        i, k = i + cuts[k % len(cuts)], k + 1
    out.append(s.flush())
    sent = dumps(envelope(200, [(b"x-echo", spelling.encode("utf-8", "surrogatepass")[:60])], b"".join(out), False, r))
    for text in _strings(json.loads(sent)):
        for view in decodings(text):
            assert secret not in view, (sent, view)

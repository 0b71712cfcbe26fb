"""The source policy at request time (pipeline/policy.py): methods, read-only catalog sources on every door, and
bodies on GET/HEAD/OPTIONS (docs/security.md: source policy). Pure checks, then a real keyrelay in front of a
real loopback upstream: a refused request sends nothing.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from keyrelay.errors import InvalidRequest, MethodNotAllowed, PayloadTooLarge, WrongSourceType
from keyrelay.model import Policy, Source
from keyrelay.pipeline import policy
from keyrelay.pipeline.policy import (
    API_CONNECTOR_KINDS,
    FILE_CONNECTOR_KINDS,
    body_limit,
    check_declared_length,
    check_kind,
    check_method,
)
from support.keyrelay import Admin, KeyrelayServer
from support.upstream import FakeUpstream

SONAR = "/api/v1/sonar/apis/{}/request"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"])
def test_a_read_only_source_refuses_writes_even_when_allowed_methods_lists_them(method: str) -> None:
    pol = Policy(allowed_methods=frozenset({method, "GET"}))
    policy.check_method(pol, method)  # a generic source: allowed_methods decides
    with pytest.raises(MethodNotAllowed) as info:
        policy.check_method(pol, method, read_only=True)
    assert "read-only" in info.value.message


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_read_only_source_still_answers_safe_methods(method: str) -> None:
    policy.check_method(Policy(), method, read_only=True)


@pytest.mark.parametrize("method", ["CONNECT", "TRACE"])
def test_connect_and_trace_are_never_forwarded(method: str) -> None:
    with pytest.raises(MethodNotAllowed):
        policy.check_method(Policy(allowed_methods=frozenset({method})), method)


def test_allowed_methods_narrow_a_generic_source() -> None:
    with pytest.raises(MethodNotAllowed):
        policy.check_method(Policy(allowed_methods=frozenset({"GET"})), "POST")


def test_an_observing_policy_notes_what_it_would_refuse_and_lets_it_through() -> None:
    noted: list[str] = []
    observing = Policy(allowed_methods=frozenset({"GET"}), mode="observe")
    policy.check_method(observing, "POST", read_only=True, note=noted.append)
    assert noted == ["allowed_methods", "allow_writes"]  # the recorder keeps the first
    policy.check_method(observing, "GET", read_only=True, note=noted.append)
    assert len(noted) == 2
    with pytest.raises(MethodNotAllowed):  # enforcing, the same note changes nothing
        policy.check_method(Policy(allowed_methods=frozenset({"GET"})), "POST", note=noted.append)
    with pytest.raises(MethodNotAllowed):  # nowhere to note: enforced
        policy.check_method(observing, "POST")


@pytest.mark.parametrize("method", ["CONNECT", "TRACE"])
def test_connect_and_trace_are_refused_even_when_observing(method: str) -> None:
    noted: list[str] = []
    with pytest.raises(MethodNotAllowed):
        policy.check_method(Policy(mode="observe"), method, note=noted.append)
    assert noted == []


async def _chunks() -> Any:
    yield b""


@pytest.mark.parametrize(("body", "length", "present"), [
    (None, None, False), (b"", 0, False), (b"", None, False), (b"x", 1, True), (None, 5, True), (b"x", None, True),
])
def test_has_body(body: bytes | None, length: int | None, present: bool) -> None:
    assert policy.has_body(body, length) is present


def test_a_streamed_body_counts_as_a_body_even_when_empty() -> None:
    stream = _chunks()
    assert policy.has_body(stream, None)
    with pytest.raises(InvalidRequest):
        policy.check_safe_method_body(Policy(), "GET", stream, None)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_safe_method_with_a_body_is_refused_unless_the_policy_allows_it(method: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        policy.check_safe_method_body(Policy(), method, b"{}", 2)
    assert info.value.field == "body"
    policy.check_safe_method_body(Policy(allow_body_on_safe_methods=True), method, b"{}", 2)
    policy.check_safe_method_body(Policy(), method, None, None)
    policy.check_safe_method_body(Policy(), "POST", b"{}", 2)


@pytest.fixture
def catalog_source(admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    """A Stripe source (read-only by default) whose allowed_methods lists writes: allow_writes still wins."""
    ws = admin.workspace("ro")
    src = admin.source(ws, upstream_url="", connector="stripe", slug="stripe",
                       config={"base_url": upstream.url}, credentials={"api_key": "sk_test_readonly_1"},
                       policy={"allowed_methods": ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]})
    return {"ws": ws, "src": src, "auth": {"Authorization": f"Bearer {admin.api_key(ws, ['proxy'])}"}}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_read_only_catalog_source_refuses_writes_on_the_gateway(kr: KeyrelayServer, upstream: FakeUpstream,
                                                                 catalog_source: dict[str, Any], method: str) -> None:
    url = f"{kr.url}/api/{catalog_source['ws']}/proxy/stripe/echo"
    r = httpx.request(method, url, headers=catalog_source["auth"], content=b"name=x")
    assert r.status_code == 405, r.text
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert upstream.requests == []
    ok = httpx.get(url, headers=catalog_source["auth"])
    assert ok.status_code == 200 and len(upstream.requests) == 1


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_read_only_catalog_source_refuses_writes_on_the_request_api(kr: KeyrelayServer, upstream: FakeUpstream,
                                                                     catalog_source: dict[str, Any],
                                                                     method: str) -> None:
    r = httpx.post(kr.url + SONAR.format(catalog_source["src"]["id"]), headers=catalog_source["auth"],
                   json={"method": method, "url": upstream.url + "/echo"})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert upstream.requests == []


def test_a_catalog_source_that_allows_writes_forwards_them(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                                           catalog_source: dict[str, Any]) -> None:
    r = admin.http.patch(f"/api/v1/sources/{catalog_source['src']['id']}", headers=admin.headers,
                         json={"policy": {"allow_writes": True}})
    assert r.status_code == 200, r.text
    url = f"{kr.url}/api/{catalog_source['ws']}/proxy/stripe/echo"
    assert httpx.post(url, headers=catalog_source["auth"], content=b"name=x").status_code == 200
    assert upstream.requests[-1].method == "POST"


@pytest.fixture
def http_source(admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("bodies")
    src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": "tok-bodies-1"})
    return {"ws": ws, "src": src, "key": admin.api_key(ws, ["proxy"])}


def _raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_gateway_refuses_a_safe_method_with_a_body(kr: KeyrelayServer, upstream: FakeUpstream,
                                                   http_source: dict[str, Any], method: str) -> None:
    url = f"{kr.url}/api/{http_source['ws']}/proxy/echo/echo"
    auth = {"Authorization": f"Bearer {http_source['key']}"}
    r = httpx.request(method, url, headers=auth, content=b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status_code == 400
    if method != "HEAD":
        assert r.json()["error"]["code"] == "invalid_request"
    assert upstream.requests == []
    assert httpx.request(method, url, headers=auth).status_code == 200  # no body: forwarded


def test_gateway_refuses_a_get_with_a_chunked_body(kr: KeyrelayServer, upstream: FakeUpstream,
                                                   http_source: dict[str, Any]) -> None:
    head = (f"GET /api/{http_source['ws']}/proxy/echo/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {http_source['key']}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    answer = _raw(kr.port, head, b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert upstream.requests == []


def test_request_api_refuses_a_get_with_a_body(kr: KeyrelayServer, upstream: FakeUpstream,
                                               http_source: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {http_source['key']}"}
    r = httpx.post(kr.url + SONAR.format(http_source["src"]["id"]), headers=auth,
                   json={"method": "GET", "url": upstream.url + "/echo", "body": {"smuggled": True}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["field"] == "body"
    assert upstream.requests == []


def test_a_source_may_allow_bodies_on_safe_methods(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream,
                                                   http_source: dict[str, Any]) -> None:
    r = admin.http.patch(f"/api/v1/sources/{http_source['src']['id']}", headers=admin.headers,
                         json={"policy": {"allow_body_on_safe_methods": True}})
    assert r.status_code == 200 and r.json()["policy"]["allow_body_on_safe_methods"] is True
    auth = {"Authorization": f"Bearer {http_source['key']}"}
    r = httpx.request("GET", f"{kr.url}/api/{http_source['ws']}/proxy/echo/echo", headers=auth,
                      content=b'{"query": {}}')
    assert r.status_code == 200 and upstream.requests[-1].body == b'{"query": {}}'
    r = httpx.post(kr.url + SONAR.format(http_source["src"]["id"]), headers=auth,
                   json={"method": "GET", "url": upstream.url + "/echo", "body": {"q": 1}})
    assert r.status_code == 200 and upstream.requests[-1].body == b'{"q":1}'


def test_the_policy_flag_is_validated(admin: Admin, http_source: dict[str, Any]) -> None:
    r = admin.http.patch(f"/api/v1/sources/{http_source['src']['id']}", headers=admin.headers,
                         json={"policy": {"allow_body_on_safe_methods": "yes"}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "policy.allow_body_on_safe_methods"


def _source() -> Source:
    return Source(id="s", workspace_id="w", connector="s3", name="n", slug="bucket", config={}, policy=Policy(),
                  status="active", credential_fields=(), created_at=0, updated_at=0)

def test_a_source_of_the_wrong_kind_is_refused_by_name() -> None:
    check_kind(_source(), "files", FILE_CONNECTOR_KINDS)
    with pytest.raises(WrongSourceType, match="'bucket' is a files source, not a api source"):
        check_kind(_source(), "files", API_CONNECTOR_KINDS)
    with pytest.raises(WrongSourceType, match="unknown"):
        check_kind(_source(), None, API_CONNECTOR_KINDS)

@pytest.mark.parametrize("allowed,method,ok", [
    (None, "DELETE", True), (None, "TRACE", False), (None, "CONNECT", False),
    (frozenset({"GET"}), "GET", True), (frozenset({"GET"}), "POST", False),
    (frozenset({"GET", "TRACE"}), "TRACE", False),  # never forwarded, whatever the allowlist says
])
def test_methods_follow_the_allowlist_but_connect_and_trace_never_pass(allowed: frozenset[str] | None,
                                                                       method: str, ok: bool) -> None:
    if ok:
        check_method(Policy(allowed_methods=allowed), method)
    else:
        with pytest.raises(MethodNotAllowed, match=method):
            check_method(Policy(allowed_methods=allowed), method)

def test_the_body_limit_is_the_smaller_of_the_policy_and_the_default() -> None:
    assert body_limit(Policy(), 100) == 100
    assert body_limit(Policy(max_body_bytes=10), 100) == 10
    assert body_limit(Policy(max_body_bytes=1000), 100) == 100
    assert body_limit(Policy(max_body_bytes=0), 100) == 0

def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    check_declared_length(None, 10)
    check_declared_length(10, 10)
    with pytest.raises(PayloadTooLarge):
        check_declared_length(11, 10)

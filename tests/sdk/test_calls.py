"""Calls as data: path encoding, request building, idempotency by method, reading JSON answers."""

from __future__ import annotations

import json

import httpx
import pytest

from keyrelay_client import UnexpectedResponse
from keyrelay_client.calls import Call, data, file_path, items, obj, path


def test_path_encodes_each_segment_whole() -> None:
    assert path("api", "v1", "sources", "a/b?c#d e") == "/api/v1/sources/a%2Fb%3Fc%23d%20e"


@pytest.mark.parametrize(("given", "sent"), [
    ("reports/q1.csv", "reports/q1.csv"), ("a b/ü.txt", "a%20b/%C3%BC.txt"), ("100%/x", "100%25/x"),
    ("what?/#1", "what%3F/%231"), ("dir/", "dir/"),
])
def test_file_paths_keep_slashes_and_encode_the_rest(given: str, sent: str) -> None:
    assert file_path(given) == sent


def test_a_call_builds_its_request() -> None:
    with httpx.Client(base_url="http://127.0.0.1:1/prefix") as client:
        req = Call("POST", "/api/v1/workspaces", params={"n": 1}, json={"name": "ü"},
                   headers={"X-Request-Id": "abc"}).request(client)
        assert str(req.url) == "http://127.0.0.1:1/prefix/api/v1/workspaces?n=1"
        assert json.loads(req.content) == {"name": "ü"} and req.headers["content-type"] == "application/json"
        assert req.headers["x-request-id"] == "abc"
        bare = Call("GET", "/x", timeout=httpx.Timeout(1.5)).request(client)
        assert bare.content == b"" and "content-type" not in bare.headers
        assert bare.extensions["timeout"]["read"] == 1.5


@pytest.mark.parametrize(("call", "safe"), [
    (Call("GET", "/"), True), (Call("DELETE", "/"), True), (Call("PUT", "/"), True), (Call("POST", "/"), False),
    (Call("PATCH", "/"), False), (Call("POST", "/", idempotent=True), True),
    (Call("GET", "/", idempotent=False), False),
])
def test_retry_safety_follows_the_method_unless_declared(call: Call, safe: bool) -> None:
    assert call.retry_safe is safe


def answer(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, request=httpx.Request("GET", "http://127.0.0.1/x"))


def test_json_answers_are_checked() -> None:
    assert data(answer(b"[1]")) == [1]
    assert obj(answer(b'{"a": 1}')) == {"a": 1}
    assert items(answer(b'{"data": [{"id": 1}]}')) == [{"id": 1}]
    for bad, reader in ((b"<html>", data), (b"[1]", obj), (b'{"data": {}}', items), (b'{"data": [1]}', items)):
        with pytest.raises(UnexpectedResponse):
            reader(answer(bad))

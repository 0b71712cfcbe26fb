"""The request API service (request_api.py), shared by its HTTP route and the MCP tool: the call is parsed with
errors naming the field, relayed through the pipeline (one log entry), and answered as the envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keyrelay.errors import DestinationNotAllowed, InvalidRequest
from keyrelay.model import Door
from keyrelay.request_api import call, envelope, inbound, parse_fields, parse_request
from support.pipeline import assembled
from support.upstream import FakeUpstream


def test_a_call_defaults_to_get_and_a_json_body_gets_its_content_type() -> None:
    c = parse_fields({"url": "https://x.test/a", "body": {"n": 1}})
    assert (c.method, c.url, c.body) == ("GET", "https://x.test/a", b'{"n":1}')
    assert c.headers == ((b"content-type", b"application/json"),)
    own = parse_fields({"method": "post", "url": "u", "body": "raw", "headers": {"Content-Type": "text/csv"}})
    assert (own.method, own.body, own.headers) == ("POST", b"raw", ((b"content-type", b"text/csv"),))


@pytest.mark.parametrize("data,field", [
    ([1], "body"), ({"method": "GET"}, "url"), ({"url": ""}, "url"), ({"url": "u", "method": "G E T"}, "method"),
    ({"url": "u", "method": 5}, "method"), ({"url": "u", "headers": {"a": 1}}, "headers"),
    ({"url": "u", "headers": ["a"]}, "headers"),
])
def test_an_invalid_call_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_fields(data)
    assert err.value.field == field


def test_malformed_json_is_named_as_such() -> None:
    with pytest.raises(InvalidRequest, match="Malformed JSON body"):
        parse_request(b"{nope")
    assert parse_request(b'{"url": "u"}').url == "u"


def test_the_envelope_merges_repeated_headers_and_parses_json_only_when_whole() -> None:
    headers = [(b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"set-cookie", b"c=3")]
    out = envelope(200, headers, b'{"ok": true}', truncated=False)
    assert out == {"status_code": 200, "headers": {"set-cookie": "a=1, c=3", "Set-Cookie": "b=2"},
                   "response_body": '{"ok": true}', "body": {"ok": True}}
    cut = envelope(200, [], b'{"ok": tr', truncated=True)
    assert cut["body"] is None and cut["truncated"] is True
    assert envelope(502, [], b"\xff<html>", truncated=False)["response_body"] == "\ufffd<html>"
    assert envelope(204, [], b"", truncated=False)["body"] is None


async def test_a_call_is_relayed_once_and_answered_as_the_envelope(tmp_path: Path, upstream: FakeUpstream) -> None:
    async with assembled(tmp_path) as p:
        src = await p.source(upstream.url + "/v1")
        c = parse_fields({"method": "POST", "url": upstream.url + "/v1/../echo", "body": {"n": 1}})
        with pytest.raises((InvalidRequest, DestinationNotAllowed)):  # not under the base: refused, still logged
            await call(p.relay, inbound(c, door=Door.SONAR, path="/r", authorization=p.auth, source_id=src.id))
        assert upstream.requests == [] and [e.status for e in p.log.entries] in ([400], [403])
        p.log.entries.clear()
        src = await p.source(upstream.url, slug="root")
        c = parse_fields({"method": "POST", "url": upstream.url + "/echo?a=1", "body": {"n": 1}})
        out = await call(p.relay, inbound(c, door=Door.SONAR, path="/r", authorization=p.auth, source_id=src.id))
        assert out["status_code"] == 200 and out["body"]["raw_path"] == "/echo?a=1"
        assert json.loads(out["response_body"]) == out["body"]
        assert upstream.requests[-1].body == b'{"n":1}'
        [entry] = p.log.entries
        assert (entry.door, entry.status, entry.bytes_in) == ("sonar", 200, 7)

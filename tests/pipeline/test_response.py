"""Step 9 (pipeline/response.py) on real upstream responses: which answers have no body, which are read whole,
when the upstream's Content-Length is kept, and redaction of echoed secrets in headers, whole bodies and
streams (also across chunk boundaries)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keyrelay.egress.http1 import Response
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.model import Outbound
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.response import BUFFER_MAX, has_no_body, headers_for, read_whole, stream_body, wants_buffer
from support.pipeline import LOOPBACK
from support.upstream import FakeUpstream

SECRET = "sk-live-9a8b7c"


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(allow=LOOPBACK, max_connections=4)
    yield c
    await c.close()


async def _get(client: UpstreamClient, url: str, *headers: tuple[str, str]) -> Response:
    return (await client.send(Outbound(method="GET", url=url, headers=headers, idempotent=True))).response


@pytest.mark.parametrize("method,status,empty", [
    ("HEAD", 200, True), ("GET", 204, True), ("GET", 304, True), ("GET", 101, True), ("GET", 200, False),
    ("POST", 404, False),
])
def test_which_answers_have_no_body(method: str, status: int, empty: bool) -> None:
    assert has_no_body(method, status) is empty


async def test_a_small_answer_is_read_whole_and_redacted_with_its_length_dropped(client: UpstreamClient,
                                                                               upstream: FakeUpstream) -> None:
    resp = await _get(client, upstream.url + f"/headers?set=X-Echo:{SECRET}", ("X-Mine", SECRET))
    redactor = Redactor([SECRET])
    assert wants_buffer(resp)
    body = await read_whole(resp, redactor)
    headers = dict(headers_for(resp, redactor, exact_length=False))
    resp.release()
    assert SECRET.encode() not in body and b"[REDACTED]" in body
    assert SECRET.encode() not in b"".join(headers.values()) and b"x-echo" in headers
    assert b"content-length" not in headers  # redaction may change the length: the caller sets the new one


async def test_without_secrets_the_upstreams_length_is_kept(client: UpstreamClient, upstream: FakeUpstream) -> None:
    resp = await _get(client, upstream.url + "/echo")
    headers = dict(headers_for(resp, Redactor([]), exact_length=False))
    body = await read_whole(resp, Redactor([]))
    resp.release()
    assert int(headers[b"content-length"]) == len(body)


async def test_large_or_chunked_answers_are_streamed(client: UpstreamClient, upstream: FakeUpstream) -> None:
    big = await _get(client, upstream.url + f"/big?size={BUFFER_MAX + 1}")
    chunked = await _get(client, upstream.url + "/stream")
    assert not wants_buffer(big) and not wants_buffer(chunked)
    big.release()
    chunked.release()


async def test_a_stream_is_redacted_across_chunk_boundaries(client: UpstreamClient, upstream: FakeUpstream) -> None:
    resp = await _get(client, upstream.url + "/stream?chunks=3&size=4")  # b"0000", b"1111", b"2222"
    out = b"".join([c async for c in stream_body(resp, Redactor(["00111122"]))])
    resp.release()
    assert out == b"00[REDACTED]22"

"""The response policy's handling of compressed bodies: which are decoded, passed or refused, and the decoding
itself (each coding, in any chunking, bounded for bombs)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.egress.http1 import Response
from keyrelay.egress.upstream import UpstreamClient
from keyrelay.errors import UpstreamUnreachable
from keyrelay.model import Outbound
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.response import (
    BUFFER_MAX,
    DECODE_STEP,
    RATIO_MAX,
    RATIO_SLACK,
    Inflater,
    check_coding,
    decode_stream,
    decoded_coding,
    has_no_body,
    headers_for,
    read_whole,
    stream_body,
    wants_buffer,
)
from support.pipeline import LOOPBACK
from support.upstream import FakeUpstream

BODY = b'{"auth": "Bearer ak&live<Zq9>42", "items": [' + b'{"id": 1, "name": "x"},' * 2000 + b"{}]}"


def deflate_raw(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


ENCODED = {
    "gzip": (b"gzip", gzip.compress(BODY)),
    "zlib-in-gzip": (b"gzip", zlib.compress(BODY)),  # some servers label zlib data gzip
    "deflate": (b"deflate", zlib.compress(BODY)),
    "deflate-raw": (b"deflate", deflate_raw(BODY)),  # and raw deflate as deflate
    "gzip-members": (b"gzip", gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:])),
}


def inflate(coding: bytes, data: bytes, size: int) -> list[bytes]:
    inflater = Inflater(coding)
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += inflater.feed(data[i:i + size])
    return out + list(inflater.finish())


@pytest.mark.parametrize("name", sorted(ENCODED))
@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 20])
def test_every_coding_decodes_in_any_chunking(name: str, size: int) -> None:
    coding, data = ENCODED[name]
    pieces = inflate(coding, data, size)
    assert b"".join(pieces) == BODY
    assert max(len(p) for p in pieces) <= DECODE_STEP


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=20), name=st.sampled_from(sorted(ENCODED)))
def test_property_any_split_decodes_to_the_same_body(cuts: list[int], name: str) -> None:
    coding, data = ENCODED[name]
    inflater, out, i, k = Inflater(coding), [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        out += inflater.feed(data[i:i + n])
        i, k = i + n, k + 1
    assert b"".join(out + list(inflater.finish())) == BODY


def test_a_bomb_stops_early_in_bounded_steps() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024), 9)  # ~64 KiB that inflates to 64 MiB
    inflater, got = Inflater(b"gzip"), 0
    with pytest.raises(UpstreamUnreachable) as info:
        for piece in inflater.feed(bomb):
            assert len(piece) <= DECODE_STEP
            got += len(piece)
    assert got <= RATIO_MAX * len(bomb) + RATIO_SLACK and got < 8 * 1024 * 1024
    assert "expands" in str(info.value)


def test_well_compressible_json_is_not_mistaken_for_a_bomb() -> None:
    body = b'{"id": 1, "status": "ok", "tags": []},' * 200_000  # ~7 MiB of one record: ~160x, about the most
    packed = gzip.compress(body, 1)
    assert len(body) / len(packed) < RATIO_MAX
    assert b"".join(inflate(b"gzip", packed, 65536)) == body


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(BODY)[:20] + b"\x00garbage" * 10])
def test_corrupt_data_is_an_upstream_failure_without_its_bytes(data: bytes) -> None:
    with pytest.raises(UpstreamUnreachable) as info:
        inflate(b"gzip", data, 5)
    assert "garbage" not in str(info.value) and "corrupt" in str(info.value)


def test_a_truncated_body_yields_what_it_holds_and_no_more() -> None:
    data = gzip.compress(BODY)
    out = b"".join(inflate(b"gzip", data[: len(data) // 2], 100))
    assert BODY.startswith(out) and 0 < len(out) < len(BODY)


async def test_decode_stream_wraps_an_async_body() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        data = gzip.compress(BODY)
        for i in range(0, len(data), 333):
            yield data[i:i + 333]

    assert b"".join([p async for p in decode_stream(chunks(), b"gzip")]) == BODY


def _resp(*headers: tuple[bytes, bytes]) -> Response:
    return Response(None, 200, list(headers), 1.0, 1.0)  # type: ignore[arg-type]  # headers only: no body is read


SECRET = Redactor(["sk_live_4eC39HqLyjWDarjtT1zdp7dc"])


@pytest.mark.parametrize(("headers", "decoded"), [
    ((), None),
    (((b"Content-Encoding", b"identity"),), None),
    (((b"Content-Encoding", b"gzip"),), b"gzip"),
    (((b"content-encoding", b"X-GZIP"),), b"gzip"),
    (((b"Content-Encoding", b"deflate"),), b"deflate"),
    (((b"Content-Encoding", b"identity, gzip"),), b"gzip"),
    (((b"Transfer-Encoding", b"chunked"), (b"Content-Encoding", b"gzip")), b"gzip"),
])
def test_one_known_layer_is_decoded(headers: tuple[tuple[bytes, bytes], ...], decoded: bytes | None) -> None:
    resp = _resp(*headers)
    check_coding(resp, SECRET)
    assert decoded_coding(resp, SECRET) == decoded
    names = {n for n, _ in headers_for(resp, SECRET, exact_length=False)}
    assert (b"content-encoding" in names) == (decoded is None and any(n.lower() == b"content-encoding"
                                                                       for n, _ in headers))


@pytest.mark.parametrize("headers", [
    ((b"Content-Encoding", b"br"),), ((b"Content-Encoding", b"zstd"),), ((b"Content-Encoding", b"compress"),),
    ((b"Content-Encoding", b"x-custom"),), ((b"Content-Encoding", b"gzip, gzip"),),
    ((b"Content-Encoding", b"gzip"), (b"Content-Encoding", b"deflate")),  # stacked over two lines
    ((b"Transfer-Encoding", b"gzip, chunked"),),
])
def test_other_codings_are_refused_when_a_secret_is_injected(headers: tuple[tuple[bytes, bytes], ...]) -> None:
    with pytest.raises(UpstreamUnreachable) as info:
        check_coding(_resp(*headers), SECRET)
    assert "sk_live" not in str(info.value)
    check_coding(_resp(*headers), Redactor([]))  # nothing to redact: passed as sent
    assert decoded_coding(_resp(*headers), Redactor([])) is None


def test_compressed_bodies_stream_rather_than_being_read_whole() -> None:
    assert wants_buffer(_resp((b"Content-Length", b"100")))
    assert not wants_buffer(_resp((b"Content-Length", b"100"), (b"Content-Encoding", b"gzip")))


SECRET_b = "sk-live-9a8b7c"

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
    resp = await _get(client, upstream.url + f"/headers?set=X-Echo:{SECRET_b}", ("X-Mine", SECRET_b))
    redactor = Redactor([SECRET_b])
    assert wants_buffer(resp)
    body = await read_whole(resp, redactor)
    headers = dict(headers_for(resp, redactor, exact_length=False))
    resp.release()
    assert SECRET_b.encode() not in body and b"[REDACTED]" in body
    assert SECRET_b.encode() not in b"".join(headers.values()) and b"x-echo" in headers
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

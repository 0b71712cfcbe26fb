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
from keyrelay.errors import UpstreamUnreachable
from keyrelay.pipeline.redact import Redactor
from keyrelay.pipeline.response import (
    DECODE_STEP,
    RATIO_MAX,
    RATIO_SLACK,
    Inflater,
    check_coding,
    decode_stream,
    decoded_coding,
    headers_for,
    wants_buffer,
)

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


# --- which bodies are decoded, passed, or refused (header decisions; a Response without a connection) ----------

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

"""Redaction of injected secrets: variants, overlaps, and chunk-boundary-safe streaming."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.pipeline.redact import REDACTED, Redactor

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
R = REDACTED


def reference(data: bytes, variants: list[bytes]) -> bytes:
    """Naive model: union of every (overlapping) occurrence; overlapping spans merge into one marker."""
    spans = []
    for v in variants:
        i = data.find(v)
        while i != -1:
            spans.append((i, i + len(v)))
            i = data.find(v, i + 1)
    spans.sort()
    out, pos, cur = [], 0, None
    for s, e in spans:
        if cur is not None and s < cur[1]:
            cur = (cur[0], max(cur[1], e))
            continue
        if cur is not None:
            out += [data[pos : cur[0]], R]
            pos = cur[1]
        cur = (s, e)
    if cur is not None:
        out += [data[pos : cur[0]], R]
        pos = cur[1]
    out.append(data[pos:])
    return b"".join(out)


def chunked(r: Redactor, data: bytes, sizes: list[int]) -> bytes:
    s, out, i, k = r.stream(), [], 0, 0
    while i < len(data):
        n = max(1, sizes[k % len(sizes)]) if sizes else len(data)
        chunk = s.feed(data[i : i + n])
        out.append(chunk)
        i, k = i + n, k + 1
    out.append(s.flush())
    return b"".join(out)


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote("a/b c+d=é" + SECRET, safe=""),
        quote_plus("a/b c+d=é" + SECRET, safe=""),
        json.dumps('q"uo\\te/' + SECRET)[1:-1],
        json.dumps('q"uo\\te/é' + SECRET, ensure_ascii=False)[1:-1],
        json.dumps('q"uo\\te/' + SECRET)[1:-1].replace("/", "\\/"),
        base64.b64encode(('q"uo\\te/' + SECRET).encode()).decode(),
        base64.urlsafe_b64encode(('q"uo\\te/' + SECRET).encode()).decode().rstrip("="),
    ],
)
def test_every_encoded_form_of_a_secret_is_redacted(form: str) -> None:
    r = Redactor([SECRET, "a/b c+d=é" + SECRET, 'q"uo\\te/' + SECRET, 'q"uo\\te/é' + SECRET])
    body = b'{"echo": "' + form.encode() + b'", "ok": 1}'
    assert r.redact_bytes(body) == b'{"echo": "' + R + b'", "ok": 1}'
    assert r.contains(body)


def test_basic_auth_token_is_redacted_in_standard_and_urlsafe_base64() -> None:
    r = Redactor([])
    assert not r.active
    r.add_basic("user", "pa?>ss~~")
    token = base64.b64encode(b"user:pa?>ss~~")
    assert b"/" in token or b"+" in token  # the two alphabets differ for this pair
    assert r.redact_bytes(b"Basic " + token) == b"Basic " + R
    assert r.redact_bytes(b"x" + base64.urlsafe_b64encode(b"user:pa?>ss~~")) == b"x" + R
    assert r.active


def test_short_and_empty_secrets_are_ignored() -> None:
    r = Redactor(["", "abc"])
    assert not r.active and r.max_len == 0
    data = b"abc abc"
    assert r.redact_bytes(data) is data
    assert not r.contains(data)


def test_inactive_stream_returns_chunks_unchanged() -> None:
    s = Redactor([]).stream()
    chunk = b"x" * 100
    assert s.feed(chunk) is chunk
    assert s.flush() == b""


def test_clean_chunk_without_possible_prefix_is_returned_as_is() -> None:
    s = Redactor([SECRET]).stream()
    chunk = b"0123456789" * 1000 + b"}"
    assert s.feed(chunk) is chunk
    assert s.flush() == b""


def test_stream_holds_back_at_most_max_len_minus_one_bytes() -> None:
    r = Redactor([SECRET])
    s = r.stream()
    data = (b"." * 50 + SECRET[:-1].encode()) * 3
    emitted = 0
    for i in range(len(data)):
        emitted += len(s.feed(data[i : i + 1]))
        assert i + 1 - emitted <= r.max_len - 1
    assert emitted + len(s.flush()) == len(data)


def test_text_redaction_keeps_unicode() -> None:
    r = Redactor(["söper-secret"])
    assert r.redact_text("ä söper-secret ü") == "ä [REDACTED] ü"
    assert r.redact_text("nothing") == "nothing"


@pytest.mark.parametrize(
    ("secrets", "data", "expected"),
    [
        (["abcdXYZ", "XYZ123"], b"-abcdXYZ123-", b"-" + R + b"-"),  # overlapping secrets merge
        (["aaaa"], b"aaaaaaaaa!", R + b"!"),  # self-overlap chain
        (["abcd"], b"abcdabcd", R + R),  # adjacent, not overlapping
        (["abcd", "abcdef"], b"abcdefg abcdx", R + b"g " + R + b"x"),  # one variant prefixes another
        (["bcde", "abcdefgh"], b"abcdefgh", R),
        (["bcde", "abcdefgh"], b"abcdefgX", b"a" + R + b"fgX"),
    ],
)
def test_overlaps_and_prefixes_at_every_split_point(secrets: list[str], data: bytes, expected: bytes) -> None:
    r = Redactor(secrets)
    assert r.redact_bytes(data) == expected
    for cut in range(len(data) + 1):
        s = r.stream()
        assert s.feed(data[:cut]) + s.feed(data[cut:]) + s.flush() == expected
    assert chunked(r, data, [1]) == expected


def test_secret_split_at_every_point_and_in_one_byte_chunks() -> None:
    r = Redactor([SECRET, "other-secret-value"])
    body = b'{"a": "' + SECRET.encode() + b'", "b": "' + base64.b64encode(SECRET.encode()) + b'"}'
    expected = b'{"a": "' + R + b'", "b": "' + R + b'"}'
    assert r.redact_bytes(body) == expected
    for cut in range(len(body) + 1):
        s = r.stream()
        assert s.feed(body[:cut]) + s.feed(body[cut:]) + s.flush() == expected
    assert chunked(r, body, [1]) == expected


def test_stream_state_survives_a_long_overlap_chain_across_chunks() -> None:
    r = Redactor(["abab"])
    data = b"x" + b"ab" * 500 + b"y"
    assert r.redact_bytes(data) == b"x" + R + b"y"
    assert chunked(r, data, [1]) == b"x" + R + b"y"
    assert chunked(r, data, [3, 7]) == b"x" + R + b"y"


SECRETS = st.lists(st.text(alphabet="ab+/=:é\"\\x", min_size=1, max_size=10), min_size=1, max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    secrets=SECRETS,
    noise=st.lists(st.binary(max_size=12), min_size=1, max_size=8),
    picks=st.lists(st.integers(0, 50), max_size=8),
    sizes=st.lists(st.integers(1, 20), max_size=6),
)
def test_streaming_equals_whole_and_reference(
    secrets: list[str], noise: list[bytes], picks: list[int], sizes: list[int]
) -> None:
    r = Redactor(secrets)
    pieces: list[bytes] = []
    forms = [s.encode() for s in secrets] + [base64.b64encode(s.encode()) for s in secrets]
    forms += [quote(s, safe="").encode() for s in secrets]
    for i, n in enumerate(noise):
        pieces.append(n)
        if i < len(picks):
            f = forms[picks[i] % len(forms)]
            pieces.append(f[: len(f) - picks[i] % 3] if picks[i] % 5 == 0 else f)  # sometimes truncated
    data = b"".join(pieces)
    whole = r.redact_bytes(data)
    assert chunked(r, data, sizes) == whole
    assert chunked(r, data, [1]) == whole
    assert whole == reference(data, list(r._m.variants))


def test_secret_with_a_lone_surrogate_does_not_break_redaction() -> None:
    r = Redactor(["ab\ud800cd"])
    assert r.redact_bytes(b"xab\\ud800cdx") == b"x" + R + b"x"

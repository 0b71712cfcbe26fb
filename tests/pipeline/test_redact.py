"""Redaction of injected secrets: literal forms, escaped spellings, parsed JSON, chunk-boundary-safe streaming."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.pipeline import redact
from keyrelay.pipeline.redact import REDACTED, Redactor, StreamRedactor, _widen
from support.spellings import decodings, spelled

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
R = REDACTED


def reference(data: bytes, variants: list[bytes]) -> bytes:
    """Naive model: union of every (overlapping) occurrence; overlapping spans merge into one marker, which also
    takes an escape left open right before it (`_widen`)."""
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
            out += [data[pos : _widen(data, cur[0], pos)], R]
            pos = cur[1]
        cur = (s, e)
    if cur is not None:
        out += [data[pos : _widen(data, cur[0], pos)], R]
        pos = cur[1]
    out.append(data[pos:])
    return b"".join(out)


def chunked(r: Redactor, data: bytes, sizes: list[int], *, literal_only: bool = False) -> bytes:
    s = StreamRedactor(r._m) if literal_only else r.stream()
    out, i, k = [], 0, 0
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
def test_literal_stage_streaming_equals_whole_and_reference(
    secrets: list[str], noise: list[bytes], picks: list[int], sizes: list[int]
) -> None:
    r = Redactor(secrets)
    pieces: list[bytes] = []
    forms = [s.encode() for s in secrets] + [base64.b64encode(s.encode()) for s in secrets]
    forms += [s.encode().hex().encode() for s in secrets]
    for i, n in enumerate(noise):
        pieces.append(n)
        if i < len(picks):
            f = forms[picks[i] % len(forms)]
            pieces.append(f[: len(f) - picks[i] % 3] if picks[i] % 5 == 0 else f)  # sometimes truncated
    data = b"".join(pieces)
    whole = b"".join(r._m.scan(data, 0, True)[0]) if r._m.present(data) else data
    assert chunked(r, data, sizes, literal_only=True) == whole
    assert chunked(r, data, [1], literal_only=True) == whole
    assert whole == reference(data, list(r._m.variants))


@settings(max_examples=200, deadline=None)
@given(
    secrets=SECRETS,
    filler=st.binary(min_size=1, max_size=3),
    size=st.sampled_from([0, 100, 16 * 1024 - 1, 16 * 1024, 40_000]),
    pick=st.integers(0, 200),
    where=st.floats(0, 1),
    cut=st.booleans(),
)
def test_presence_is_exact_on_both_sides_of_the_one_pass_threshold(
    secrets: list[str], filler: bytes, size: int, pick: int, where: float, cut: bool
) -> None:
    """Short data is checked variant by variant behind a memchr for two rare bytes, long data in one
    Aho-Corasick pass: both answer exactly whether some variant occurs (a variant cut by one byte must not
    count, one placed whole anywhere, the very start and end included, must)."""
    r = Redactor(secrets)
    m = r._m
    if not m.variants:
        return
    v = m.variants[pick % len(m.variants)]
    v = v[:-1] if cut else v
    body = bytearray((filler * (size // len(filler) + 1))[:size])
    at = int(where * len(body))
    data = bytes(body[:at] + v + body[at:])
    assert m.present(data) == any(w in data for w in m.variants)
    if not cut:
        assert m.present(data)


def test_secret_with_a_lone_surrogate_does_not_break_redaction() -> None:
    r = Redactor(["ab\ud800cd"])
    assert r.redact_bytes(b"xab\\ud800cdx") == b"x" + R + b"x"


# --- escaped spellings: what a JSON, HTML or URL decoder turns back into the secret ------------------------------

ECHO = "ak&live<SECRET>42"
GO = json.dumps({"got": ECHO}).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


@pytest.mark.parametrize("body", [
    GO,  # Go's encoder
    '{"got": "' + "".join(f"\\u{ord(c):04x}" for c in ECHO) + '"}',  # every character escaped
    '{"got": "' + "".join(f"\\u{ord(c):04X}" for c in ECHO) + '"}',  # upper-case hex
    '{"got": "ak\\u0026live\\u003CSECRET>4\\u0032"}',  # mixed: raw, lower and upper case
    '{"got": "{\\"inner\\": \\"ak\\\\u0026live<SECRET>42\\"}"}',  # JSON in JSON: the escape escaped again
    "<p>ak&amp;live&lt;SECRET&gt;42</p>",  # html.escape
    "ak&#38;live&#60;SECRET&#62;42",  # decimal references
    "ak&#x26live&#X3c;SECRET&#x003E;42",  # hex, either x, zero padded, with and without ';'
    "ak&AMP;live&LT;SECRET&gt42",  # named, upper case, without ';'
    "ak&amp;amp;live&lt;SECRET&gt;42",  # HTML escaped twice
    "ak%26live%3cSECRET%3e42",  # percent, lower-case hex
    "ak%2526live%253CSECRET%253E42",  # percent-encoded twice
    "a\\u006b%26live&lt;SECRET&#62;42",  # one character in each family
    ECHO.encode().hex(),
    ECHO.encode().hex().upper(),
])
def test_escaped_spellings_of_a_secret_are_redacted(body: str) -> None:
    r = Redactor([ECHO])
    out = r.redact_bytes(body.encode())
    assert out.count(R) == 1, out
    assert r.contains(body.encode())
    for cut in range(0, len(body), 7):  # and across a chunk boundary anywhere
        s = r.stream()
        assert R in s.feed(body[:cut].encode()) + s.feed(body[cut:].encode()) + s.flush()


# 18 KB of large data (where a pass decides which escape patterns run) that holds every escape introducer, though
# no escape of a secret's character: each pattern's gate passes, as on the benchmark's 1 MiB body
PAD = "abc &x; %zz \\n #9; _- " * 800


@pytest.mark.parametrize(("secret", "body"), [
    (ECHO, GO),
    (ECHO, '{"got": "' + "".join(f"\\u{ord(c):04X}" for c in ECHO) + '"}'),
    (ECHO, '{"got": "{\\"inner\\": \\"ak\\\\u0026live<SECRET>42\\"}"}'),
    (ECHO, "ak&#x26live&#X3c;SECRET&#x003E;42"),
    (ECHO, "ak&AMP;live&LT;SECRET&gt42"),
    (ECHO, "ak&live<SECRET&gt42"),  # the only escape a legacy name without ';'
    (ECHO, "ak&amp;amp;live&lt;SECRET&gt;42"),
    (ECHO, "ak&live&amp;lt;SECRET>42"),  # the only escape of '<' an escaped name
    (ECHO, "ak%2526live%253CSECRET%253E42"),
    ("kilosecretword", "%256Bilosecretword"),  # percent-encoded twice, no octet of the secret begins with 2
    ("pass word 1234", "q=pass+word+1234&x=1"),  # '+' for a space, in a query string
    (ECHO, "a\\u006b%26live&lt;SECRET&#62;42"),
])
def test_escaped_spellings_are_found_in_large_data_too(secret: str, body: str) -> None:
    """From `_ONE_PASS_FROM` bytes on, an escape pattern runs only when one of the literals every match of it
    begins with occurs: the spelling must be found there as in small data, whole and streamed in large pieces."""
    r = Redactor([secret])
    data = (PAD + body + PAD).encode()
    assert r.redact_bytes(data).count(R) == 1
    for cut in (len(PAD) - 3, len(PAD) + len(body) // 2, len(PAD) + len(body) + 5):
        s = r.stream()
        assert (s.feed(data[:cut]) + s.feed(data[cut:]) + s.flush()).count(R) == 1, cut


@pytest.mark.parametrize("secret", ["s\u00e9cr\U0001f600t-\u20ac1", 'q"uo\\te/x', "tab\there"])
def test_non_ascii_astral_and_json_special_characters(secret: str) -> None:
    r = Redactor([secret])
    doc = json.dumps({"a": secret})
    for form in (doc, json.dumps({"a": secret}, ensure_ascii=False), doc.replace("/", "\\/"),
                 re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), doc)):
        assert secret not in json.loads(r.redact_text(form))["a"], form
    assert R in r.redact_bytes(quote(secret).lower().encode())
    assert R in r.redact_bytes(secret.encode("utf-16-le")) and R in r.redact_bytes(secret.encode("utf-16-be"))


def test_literal_forms_of_base64_inside_json_and_query_strings() -> None:
    r = Redactor([])
    r.add_basic("user", "ab?>~>?")
    token = base64.b64encode(b"user:ab?>~>?")
    assert b"/" in token and b"+" in token
    for form in (token, token.replace(b"/", b"\\/"), quote(token, safe="").encode()):
        assert r.redact_bytes(b"x " + form + b" y") == b"x " + R + b" y"


def test_escapes_of_other_characters_change_nothing() -> None:
    r = Redactor([SECRET])
    body = json.dumps({"t": "caf\u00e9 \n <b> & \" \\ / %20 &amp; &#39;"}).encode() * 50
    assert r.redact_bytes(body) is body
    assert not r.contains(body)


def test_escape_forms_beyond_the_documented_bounds_are_not_followed() -> None:
    r = Redactor(["ak&live"])
    assert R in r.redact_bytes(b"ak&#" + b"0" * 8 + b"38;live")  # 8 leading zeros: covered
    assert R not in r.redact_bytes(b"ak&#" + b"0" * 9 + b"38;live")  # 9: outside what redaction follows
    assert R in r.redact_bytes(b"ak" + b"\\" * 8 + b"u0026live")


def test_a_marker_never_ends_an_escape_left_open_before_it() -> None:
    # `&#48` before a raw secret: were the marker to start after it, an HTML decoder would read `0` + marker
    r = Redactor(["0000"])
    assert r.redact_bytes(b"000&#480000") == b"000" + R
    s = r.stream()  # also when the escape and the secret arrive in different chunks
    assert s.feed(b"000&#48") + s.feed(b"0000") + s.flush() == b"000" + R
    # a backslash before a raw secret: `\[` would break the JSON string the secret was in
    r = Redactor(["nabc1234"])
    out = r.redact_bytes(b'{"x": "q\\nabc1234"}')
    assert json.loads(out) == {"x": "q[REDACTED]"}


def test_every_escape_in_a_run_of_backslashes_is_read() -> None:
    secret = "a\\&b1"  # a backslash then '&': JSON doubles the backslash, Go escapes '&'
    body = json.dumps({"x": secret}).replace("&", "\\u0026").encode()
    assert b"\\\\\\u0026" in body
    assert json.loads(Redactor([secret]).redact_bytes(body)) == {"x": "[REDACTED]"}


def test_stream_holds_back_a_bounded_tail_and_passes_clean_chunks_at_once() -> None:
    r = Redactor([ECHO])
    s = r.stream()
    clean = b'data: {"delta": "hello \\n world & more"}\n\n'
    assert s.feed(clean) == clean  # an event without a possible secret is not held back
    emitted = fed = 0
    for _ in range(200):  # escapes of a secret's characters, never completing it
        piece = b"x\\u0026y&lt;z"
        out = s.feed(piece)
        assert R not in out
        emitted, fed = emitted + len(out), fed + len(piece)
        assert fed - emitted < 4096
    assert emitted + len(s.flush()) == fed


def test_redact_json_walks_keys_and_values_and_returns_clean_documents_unchanged() -> None:
    r = Redactor([ECHO])
    clean = {"a": [1, "b", {"c": None}]}
    assert r.redact_json(clean) is clean
    doc = {ECHO: ["x", {"y": "pre ak&amp;live&lt;SECRET&gt;42 post"}],
           "nested": '{"t": "ak\\u0026live<SECRET>42"}', "n": 3}
    out = r.redact_json(doc)
    assert out == {"[REDACTED]": ["x", {"y": "pre [REDACTED] post"}], "nested": '{"t": "[REDACTED]"}', "n": 3}
    assert Redactor([]).redact_json(doc) is doc


def test_a_document_too_deep_to_walk_is_withheld_whole() -> None:
    r = Redactor([ECHO])
    deep: object = ECHO
    for _ in range(100_000):
        deep = [deep]
    assert r.redact_json(deep) == "[REDACTED]"


def test_header_names_are_checked_as_sent_and_case_folded() -> None:
    r = Redactor(["SeCrEt-Key-42"])
    assert r.contains_folded(b"x-secret-key-42")  # sent lower-cased to the agent
    assert r.contains_folded(b"X-SECRET-KEY-42")
    assert r.contains_folded(b"x-" + b"SeCrEt-Key-42".hex().encode())
    assert not r.contains_folded(b"x-request-id")


# Property: any mix of escapes, any chunking, 0 leaks. A leak is the secret in what a consumer decodes: the JSON
# string (json.loads), and that string after HTML unescaping and/or URL decoding, in either order.


def assert_no_leak(doc_bytes: bytes, secret: str) -> None:
    doc = json.loads(doc_bytes)
    for value in (doc["pre"], doc["got"], doc["post"]):
        for view in decodings(value):
            assert secret not in view, (doc_bytes, view)


NOISE = st.text(alphabet="abc xyz019_-", max_size=6)


@settings(max_examples=600, deadline=None)
@given(case=spelled(), pre=NOISE, post=NOISE, cuts=st.lists(st.integers(1, 40), max_size=8))
def test_property_escaped_echoes_never_leak_whole_or_streamed(
    case: tuple[str, str], pre: str, post: str, cuts: list[int]
) -> None:
    secret, spelling = case
    doc = ('{"pre": "' + pre + '", "got": "' + pre + spelling + post + '", "post": "' + post + '"}').encode()
    r = Redactor([secret])
    assert_no_leak(r.redact_bytes(doc), secret)
    s, out, i, k = r.stream(), [], 0, 0
    while i < len(doc):
        n = cuts[k % len(cuts)] if cuts else len(doc)
        out.append(s.feed(doc[i:i + n]))
        i, k = i + n, k + 1
    out.append(s.flush())
    assert_no_leak(b"".join(out), secret)
    assert_no_leak(json.dumps(r.redact_json(json.loads(doc))).encode(), secret)


@settings(max_examples=300, deadline=None)
@given(case=spelled(), pre=NOISE, post=NOISE, cut=st.integers(0, 40_000))
def test_property_escaped_echoes_never_leak_from_large_data(case: tuple[str, str], pre: str, post: str,
                                                             cut: int) -> None:
    """The same echoes inside bodies over `_ONE_PASS_FROM` bytes, where the escape patterns run only when the
    literals their matches begin with occur, whole and streamed in two large pieces cut anywhere."""
    secret, spelling = case
    doc = ('{"pre": "' + PAD + pre + '", "got": "' + pre + spelling + post + '", "post": "' + post + PAD
           + '"}').encode()
    r = Redactor([secret])
    assert_no_leak(r.redact_bytes(doc), secret)
    s = r.stream()
    assert_no_leak(s.feed(doc[:cut]) + s.feed(doc[cut:]) + s.flush(), secret)


@pytest.mark.parametrize(("literals", "text"), [
    ([{b"&amp"}, {b"&amp;"}], b"&amp;"),  # begins where a longer one is reported
    ([{b"ab"}, {b"bc"}], b"abc"),  # runs past the end of the reported one
    ([{b"xyz"}, {b"y"}], b"xyz"),  # inside the reported one
    ([{b"%2", b"%3"}, {b"u00"}, {b"zz"}], b"%3u00"),  # side by side: both reported
])
def test_a_literal_hidden_under_another_match_still_lets_its_locator_run(literals: list[set[bytes]],
                                                                         text: bytes) -> None:
    """Locators run on large data only when one of their literals occurs; the one pass that decides reports
    matches that do not overlap, so the literals it can hide count as found (redact.py `_Locators`)."""
    locators = redact._Locators([(0, b"x%d" % i, 0, lits) for i, lits in enumerate(literals)])
    pad = b"." * (redact._ONE_PASS_FROM + redact._PROBE)
    for data in (pad + text + pad, text + pad):  # past the probe, and in it
        ran = locators.runnable(data, 0, 0)
        wanted = [i for i, lits in enumerate(literals) if any(x in text for x in lits)]
        assert [locators.all.index(loc) for loc in ran] == wanted
    assert locators.runnable(pad * 2, 0, 0) == []  # none occurs: none runs

"""Header policy: request allowlist + always-drop, response filtering and secret scrubbing."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from keyrelay import request_api
from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.headers import (
    ALWAYS_DROP,
    DEFAULT_FORWARD,
    check_names,
    headers_from_mapping,
    request_headers,
    response_headers,
    validate_forward_list,
)
from keyrelay.pipeline.redact import Redactor

# written out as docs/security.md lists them (not read from ALWAYS_DROP): removing one from the code fails a test
DROPPED = ["authorization", "proxy-authorization", "cookie", "host", "content-length", "transfer-encoding",
           "connection", "keep-alive", "te", "trailer", "upgrade", "http2-settings", "proxy-connection", "expect",
           "forwarded", "x-real-ip", "x-original-url", "x-rewrite-url", "x-original-uri", "x-original-host", "x-host",
           "x-http-host-override", "x-http-method-override", "x-method-override", "x-http-method",
           "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-keyrelay-x", "x-keyrelay-caller"]
SECRET = "sk_test_51HxYzSecretValue0001"


def raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in pairs]


def test_the_documented_list_is_the_codes_list() -> None:
    assert {n.encode() for n in DROPPED if not n.startswith(("x-forwarded-", "x-keyrelay-"))} == ALWAYS_DROP


@pytest.mark.parametrize("name", DROPPED)
def test_always_dropped_header_is_dropped_even_if_allowlisted(name: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_forward_list([name])
    forward = DEFAULT_FORWARD | {name}
    assert request_headers(raw((name, "x"), ("accept", "a")), forward) == [("accept", "a")]
    assert request_headers(raw((name, "x")), None) == []
    assert request_headers(headers_from_mapping({name.upper(): "x"}), forward) == []


def test_default_allowlist_forwards_safe_headers_only() -> None:
    got = request_headers(
        raw(("accept", "application/json"), ("x-custom", "1"), ("content-type", "text/plain"),
            ("stripe-version", "2024-06-20"), ("origin", "https://evil"), ("user-agent", "agent/1")),
        None,
    )
    assert got == [("accept", "application/json"), ("content-type", "text/plain"),
                   ("stripe-version", "2024-06-20"), ("user-agent", "agent/1")]


def test_policy_allowlist_replaces_the_default() -> None:
    got = request_headers(raw(("accept", "a"), ("x-custom", "1")), frozenset({"x-custom"}))
    assert got == [("x-custom", "1")]


def test_duplicate_allowed_headers_are_kept_in_order() -> None:
    got = request_headers(raw(("accept", "a"), ("prefer", "p"), ("accept", "b")), None)
    assert got == [("accept", "a"), ("prefer", "p"), ("accept", "b")]


def test_headers_named_in_connection_are_dropped_wherever_connection_appears() -> None:
    forward = frozenset({"x-custom", "accept", "prefer"})
    headers = raw(("x-custom", "1"), ("accept", "a"), ("connection", "X-Custom , keep-alive"),
                  ("connection", "prefer"), ("prefer", "p"))
    assert request_headers(headers, forward) == [("accept", "a")]


def test_names_with_underscores_are_dropped() -> None:
    forward = frozenset({"x_custom", "accept"})
    assert request_headers(raw(("x_custom", "1"), ("accept", "a")), forward) == [("accept", "a")]
    assert request_headers(headers_from_mapping({"X_Custom": "1", "Accept": "a"}), forward) == [("accept", "a")]


@pytest.mark.parametrize("value", ["a\r\nHost: evil", "a\nb", "a\rb", "a\x00b", "a\x1fb", "a\x7fb"])
def test_control_characters_in_a_forwarded_value_are_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        request_headers(raw(("accept", value)), None)
    assert "accept" in e.value.message and value not in e.value.message
    with pytest.raises(InvalidRequest):
        request_headers(headers_from_mapping({"Accept": value}), None)


def test_control_characters_in_a_dropped_header_do_not_matter() -> None:
    assert request_headers(raw(("x-other", "a\r\nb"), ("accept", "a\tb")), None) == [("accept", "a\tb")]


def test_values_are_utf8_and_invalid_bytes_are_rejected() -> None:
    assert request_headers([(b"accept", "é".encode())], None) == [("accept", "é")]
    with pytest.raises(InvalidRequest):
        request_headers([(b"accept", b"\xff")], None)


def test_mapping_headers_are_case_insensitive_and_keep_order() -> None:
    got = request_headers(headers_from_mapping({"Accept": "a", "Authorization": "Bearer x", "ACCEPT": "b"}), None)
    assert got == [("accept", "a"), ("accept", "b")]
    assert request_headers(headers_from_mapping(None), None) == []
    assert request_headers(headers_from_mapping({}), None) == []


@pytest.mark.parametrize(
    "headers",
    [{"accept": 1}, {"accept": None}, {"accept": ["a"]}, {1: "a"}, ["accept", "a"], "accept: a",
     {"bad name": "a"}, {"": "a"}, {"acc\u212aept": "a"}, {"accept": "\ud800"}, {"a:b": "c"}],
)
def test_malformed_mapping_headers_are_rejected(headers: object) -> None:
    with pytest.raises(InvalidRequest) as e:  # the request API's checks, in the order the pipeline applies them
        call = request_api.parse_fields({"url": "https://api.example.com/x", "headers": headers})
        check_names(call.headers)
        request_headers(call.headers, None)
    assert e.value.field == "headers"


def test_forward_list_is_lowercased() -> None:
    assert validate_forward_list(["X-Custom", "Accept", "accept"]) == frozenset({"x-custom", "accept"})
    assert validate_forward_list([]) == frozenset()


@pytest.mark.parametrize(
    "names",
    [["Authorization"], ["HOST"], ["Cookie"], ["X-Forwarded-For"], ["x-keyrelay-anything"], ["connection"],
     ["x_custom"], ["bad name"], [""], ["a:b"], [1], "accept", ["é"], ["x-\u212a"], ["a" * 200],
     [f"x-h{i}" for i in range(101)]],
)
def test_forward_list_rejects_unforwardable_or_malformed_names(names: object) -> None:
    with pytest.raises(InvalidRequest) as e:
        validate_forward_list(names)  # type: ignore[arg-type]
    assert e.value.field == "policy.forward_headers"


def test_every_default_forward_name_passes_policy_validation() -> None:
    assert validate_forward_list(DEFAULT_FORWARD) == DEFAULT_FORWARD


UPSTREAM = [
    (b"Content-Type", b"application/json"), (b"Content-Length", b"42"), (b"Transfer-Encoding", b"chunked"),
    (b"Connection", b"keep-alive, X-Secret-Hop"), (b"Keep-Alive", b"timeout=5"), (b"X-Secret-Hop", b"1"),
    (b"Set-Cookie", b"sid=1"), (b"Set-Cookie", b"b=2"), (b"Server", b"nginx"), (b"Date", b"today"),
    (b"Alt-Svc", b'h3=":443"'), (b"Strict-Transport-Security", b"max-age=1"), (b"Upgrade", b"h2c"),
    (b"Proxy-Authenticate", b"Basic"), (b"Trailer", b"x"), (b"X-Powered-By", b"php"),
    (b"Access-Control-Allow-Origin", b"*"), (b"X-Keyrelay-Request-Id", b"spoof"),
    (b"ETag", b'"abc"'), (b"Link", b'<https://api.x/p?page=2>; rel="next"'),
    (b"X-RateLimit-Remaining", b"99"), (b"RateLimit-Reset", b"30"), (b"Retry-After", b"5"),
    (b"Location", b"https://api.x/next"), (b"X-Request-Id", b"req_1"), (b"Cache-Control", b"no-store"),
    (b"Content-Encoding", b"gzip"), (b"Link", b"<b>; rel=last"), (b"WWW-Authenticate", b"Bearer"),
]
KEPT = [
    (b"content-type", b"application/json"), (b"etag", b'"abc"'),
    (b"link", b'<https://api.x/p?page=2>; rel="next"'), (b"x-ratelimit-remaining", b"99"),
    (b"ratelimit-reset", b"30"), (b"retry-after", b"5"),
    (b"location", b"https://api.x/next"), (b"x-request-id", b"req_1"), (b"cache-control", b"no-store"),
    (b"content-encoding", b"gzip"), (b"link", b"<b>; rel=last"), (b"www-authenticate", b"Bearer"),
]


def test_response_drops_hop_by_hop_cookies_and_origin_policy_and_keeps_the_rest() -> None:
    assert response_headers(UPSTREAM, redactor=None, passthrough_length=False) == KEPT


def test_response_content_length_passes_only_when_the_body_is_unchanged() -> None:
    got = response_headers(UPSTREAM, redactor=Redactor([]), passthrough_length=True)
    assert got == [KEPT[0], (b"content-length", b"42"), *KEPT[1:]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"https://api.x/cb?api_key={SECRET}&a=1", b"https://api.x/cb?api_key=[REDACTED]&a=1"),
        (f"https://api.x/cb?k={quote('p/w+' + SECRET, safe='')}", b"https://api.x/cb?k=[REDACTED]"),
        (f"https://api.x/{SECRET}/x", b"https://api.x/[REDACTED]/x"),
    ],
)
def test_secret_in_location_is_scrubbed(value: str, expected: bytes) -> None:
    r = Redactor([SECRET, "p/w+" + SECRET])
    headers = [(b"Location", value.encode()), (b"ETag", b"1")]
    got = response_headers(headers, redactor=r, passthrough_length=False)
    assert got == [(b"location", expected), (b"etag", b"1")]


def test_secret_in_any_header_value_is_scrubbed_and_in_a_name_is_dropped() -> None:
    r = Redactor([SECRET])
    got = response_headers(
        [(b"X-Echo-Auth", f"Bearer {SECRET}".encode()), (f"X-{SECRET}".encode(), b"1"), (b"X-Ok", b"2")],
        redactor=r, passthrough_length=False,
    )
    assert got == [(b"x-echo-auth", b"Bearer [REDACTED]"), (b"x-ok", b"2")]


@pytest.mark.parametrize("name", [
    f"X-{SECRET.upper()}",  # the agent gets names lower-cased: a secret in any case would come through
    f"x-{SECRET.lower()}-id",
    f"X-{SECRET.encode().hex().upper()}",
    "x-" + "".join(f"%{b:02x}" for b in SECRET.encode()),
    "x-" + base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
])
def test_a_name_carrying_a_secret_in_any_case_or_encoding_is_dropped(name: str) -> None:
    r = Redactor([SECRET])
    got = response_headers([(name.encode(), b"1"), (b"X-Ok", b"2")], redactor=r, passthrough_length=False)
    assert got == [(b"x-ok", b"2")]
    assert response_headers([(b"X-Ok", b"2")], redactor=r, passthrough_length=False) == [(b"x-ok", b"2")]


def test_response_values_with_control_characters_and_bad_names_are_dropped() -> None:
    got = response_headers(
        [(b"X-A", b"a\r\nSet-Cookie: x"), (b"X-B", b"b\x00"), (b"X C", b"c"), (b"X-D", b"d\te")],
        redactor=None, passthrough_length=False,
    )
    assert got == [(b"x-d", b"d\te")]


def test_a_head_checked_before_is_judged_again_by_its_bytes() -> None:
    """The redactor remembers heads it checked: the same head with a secret is redacted every time, a clean one
    passes every time, and a head that differs from a remembered clean one by the secret is caught."""
    secret = "sk_live_remembered_head_0123456789"
    redactor = Redactor([secret])
    clean = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")]
    dirty = [(b"Content-Type", b"application/json"), (b"X-Echo", f"Bearer {secret}".encode())]
    for _ in range(3):
        assert response_headers(clean, redactor=redactor, passthrough_length=False) == [
            (b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        out = response_headers(dirty, redactor=redactor, passthrough_length=False)
        assert secret.encode() not in b"".join(v for _, v in out)
        assert (b"x-echo", b"Bearer [REDACTED]") in out
    named = [(b"Content-Type", b"application/json"), (secret.upper().encode(), b"1")]
    for _ in range(2):
        assert response_headers(named, redactor=redactor, passthrough_length=False) == [
            (b"content-type", b"application/json")]


def test_a_head_remembered_as_clean_is_checked_again_once_basic_credentials_join() -> None:
    redactor = Redactor(["sk_live_first_secret_0123456789"])
    token = base64.b64encode(b"user:pa55word-for-basic").decode()
    head = [(b"X-Echo", f"Basic {token}".encode())]
    clean = [(b"x-echo", f"Basic {token}".encode())]
    assert response_headers(head, redactor=redactor, passthrough_length=False) == clean
    redactor.add_basic("user", "pa55word-for-basic")
    assert response_headers(head, redactor=redactor, passthrough_length=False) == [(b"x-echo", b"Basic [REDACTED]")]

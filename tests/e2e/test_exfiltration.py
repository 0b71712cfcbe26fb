"""Exfiltration (docs/security.md): an untrusted agent tries to make keyrelay send the
credential somewhere else, or to read it back. Real keyrelay, real loopback upstreams.

EVIL upstreams listen on 127.0.0.2 and on another port of 127.0.0.1; both are inside the test's
KEYRELAY_UPSTREAM_ALLOW_CIDRS (127.0.0.0/8), so the SSRF guard does not save us: only the destination rules do.
Every test ends with EVIL at 0 requests and 0 connections.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import ada_url
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.adversarial import Watcher, raw_exchange
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.upstream import FakeUpstream

SECRET = "s3cr3t/K3y+v@lue=9f"  # bearer token: contains bytes that percent-encoding changes
QSECRET = "qk/7+Zz&w=Q9v"  # api key sent as a query parameter
BASIC = ("svc-user", "b4sic:pa ss/wd")
SONAR = "/api/v1/sonar/apis/{}/request"


@dataclass
class Env:
    kr: KeyrelayServer
    upstream: FakeUpstream
    evil: list[FakeUpstream]
    ws: str
    root: str  # source id, base = upstream root
    v1: str  # source id, base = upstream /v1
    client: httpx.Client
    key: str
    watcher: Watcher

    def sonar(self, source_id: str, url: str, **extra: Any) -> httpx.Response:
        return self.client.post(SONAR.format(source_id), json={"method": "GET", "url": url, **extra})

    def gateway_raw(self, raw_path: str, slug: str = "root") -> tuple[int, bytes]:
        """Send a gateway request with a byte-exact request target (httpx would normalise dot segments)."""
        target = f"/api/{self.ws}/proxy/{slug}{raw_path}".encode("latin-1")
        req = (b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + self.key.encode()
               + b"\r\nConnection: close\r\n\r\n")
        r = raw_exchange(self.kr.port, req)
        self.watcher.note(r.status, r.body, f"raw GET {raw_path!r}")
        return r.status, r.body

    def evil_untouched(self) -> None:
        for e in self.evil:
            assert e.requests == [] and e.connections == 0, f"EVIL {e.url} was reached"


@pytest.fixture
def evil() -> Iterator[list[FakeUpstream]]:
    with FakeUpstream(host="127.0.0.2") as far, FakeUpstream() as near:
        yield [far, near]


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream, evil: list[FakeUpstream]) -> Iterator[Env]:
    ws = admin.workspace("exfil")
    creds = {"bearer_token": SECRET}
    root = admin.source(ws, upstream_url=upstream.url, credentials=creds, slug="root")["id"]
    v1 = admin.source(ws, upstream_url=upstream.url + "/v1", credentials=creds, slug="v1")["id"]
    key = admin.api_key(ws, ["proxy"])
    watcher = Watcher(hosts=[f"{u.host}:{u.port}" for u in (upstream, *evil)])
    client = watcher.client(kr.url, headers={"Authorization": f"Bearer {key}"})
    e = Env(kr, upstream, evil, ws, root, v1, client, key, watcher)
    yield e
    client.close()
    e.evil_untouched()
    watcher.verify()


def _expand(template: str, env: Env) -> str:
    return (template.replace("«P»", str(env.upstream.port)).replace("«E»", str(env.evil[0].port))
            .replace("«N»", str(env.evil[1].port)))


# Request API `url` values that must be refused. «P» = the source's port, «E» = EVIL on 127.0.0.2, «N» = EVIL on
# 127.0.0.1. Every one is refused with 400 invalid_request or 403 destination_not_allowed and sends nothing.
REFUSED_URLS = [
    # userinfo
    "http://user:pass@127.0.0.1:«P»/echo",
    "http://127.0.0.1:«P»@127.0.0.2:«E»/echo",
    "http://127.0.0.1:«P»:x@127.0.0.2:«E»/echo",
    "http://@127.0.0.1:«P»/echo",
    "http://127.0.0.1:«P»%40127.0.0.2:«E»/echo",
    "http://127.0.0.2:«E»?@127.0.0.1:«P»/echo",
    "http://127.0.0.2:«E»#@127.0.0.1:«P»/echo",
    "http://127.0.0.1:«P»#@127.0.0.2:«E»/echo",
    # backslashes
    "http://127.0.0.1:«P»\\@127.0.0.2:«E»/echo",
    "http://127.0.0.2:«E»\\@127.0.0.1:«P»/echo",
    "http:\\\\127.0.0.2:«E»\\echo",
    "http://127.0.0.1:«P»\\echo",
    "http://127.0.0.1:«P»/echo\\..\\x",
    "http://127.0.0.1:«P»/%5c%5c127.0.0.2:«E»/echo",
    # encoded dots and slashes, dot segments
    "http://127.0.0.1:«P»/%2e%2e/echo",
    "http://127.0.0.1:«P»/%2E%2e/echo",
    "http://127.0.0.1:«P»/..%2fecho",
    "http://127.0.0.1:«P»/echo%2f..%2f..%2fx",
    "http://127.0.0.1:«P»/%252e%252e/echo",
    "http://127.0.0.1:«P»/%252fecho",
    "http://127.0.0.1:«P»/echo%00",
    "http://127.0.0.1:«P»/echo%2500",
    "http://127.0.0.1:«P»/./echo",
    "http://127.0.0.1:«P»/../echo",
    "http://127.0.0.1:«P»/.%2e/echo",
    "http://127.0.0.1:«P»/a/..;/echo",
    "http://127.0.0.1:«P»//127.0.0.2:«E»/echo",
    "http://127.0.0.1:«P»/v1/../../echo",
    # IP literals: decimal, octal, hex, short, IPv4-mapped IPv6, 0.0.0.0, the wrong loopback, names
    "http://2130706433:«P»/echo",
    "http://2130706434:«E»/echo",
    "http://0177.0.0.1:«P»/echo",
    "http://0177.0.0.2:«E»/echo",
    "http://0x7f.0.0.1:«P»/echo",
    "http://0x7f000002:«E»/echo",
    "http://127.1:«P»/echo",
    "http://127.000.000.001:«P»/echo",
    "http://127.0.0.01:«P»/echo",
    "http://[::ffff:127.0.0.1]:«P»/echo",
    "http://[::ffff:7f00:2]:«E»/echo",
    "http://[::ffff:127.0.0.2]:«E»/echo",
    "http://[::1]:«P»/echo",
    "http://[::127.0.0.1]:«P»/echo",
    "http://0.0.0.0:«P»/echo",
    "http://0:«P»/echo",
    "http://localhost:«P»/echo",
    "http://127.0.0.2:«P»/echo",
    "http://127.0.0.2:«E»/echo",
    "http://127%2e0.0.1:«P»/echo",
    "http://127\u30020\u30020\u30021:«P»/echo",  # ideographic full stops
    "http://\uff11\uff12\uff17.0.0.1:«P»/echo",  # fullwidth digits
    # trailing dots
    "http://127.0.0.1.:«P»/echo",
    "http://localhost.:«P»/echo",
    # other ports and schemes
    "http://127.0.0.1:«N»/echo",
    "http://127.0.0.1/echo",
    "http://127.0.0.1:0«P»/echo",
    "http://127.0.0.1:«P»:«N»/echo",
    "http://127.0.0.1:«P»0/echo",
    "http://127.0.0.1:/echo",
    "https://127.0.0.1:«P»/echo",
    "ftp://127.0.0.1:«P»/echo",
    "ws://127.0.0.1:«P»/echo",
    "file:///etc/passwd",
    "gopher://127.0.0.1:«P»/_GET%20/echo",
    "//127.0.0.2:«E»/echo",
    "127.0.0.1:«P»/echo",
    "/echo",
    "http:/127.0.0.1:«P»/echo",
    "http:127.0.0.1:«P»/echo",
    "http:///127.0.0.1:«P»/echo",
    # fragments
    "http://127.0.0.1:«P»/echo#frag",
    "http://127.0.0.1:«P»/echo#",
    # whitespace, CR/LF and other control characters (raw and where they end up in the request line)
    "http://127.0.0.1:«P»/echo\r\nHost: 127.0.0.2:«E»",
    "http://127.0.0.1:«P»/echo HTTP/1.1\r\nHost: 127.0.0.2:«E»\r\n\r\nGET /x",
    "http://127.0.0.1:«P»/echo%0d%0aHost:%20127.0.0.2",
    "http://127.0.0.1:«P»/echo?a=1\r\nX: y",
    "http://127.0.0.1:«P»/echo\n",
    " http://127.0.0.1:«P»/echo",
    "http://127.0.0.1:«P»/ec ho",
    "http://127.0.0.1:«P»/echo\t",
    "http://127.0.0.1:«P»/echo\x00",
    "http://127.0.0.1:«P»/\u00e9cho",
    "http://127.0.0.1:«P»/echo\u2025",
    "http://127.0.0.1:«P»/" + "a" * 9000,
]

# Under the source whose base is /v1: segment-boundary prefix matching.
REFUSED_V1_URLS = [
    "http://127.0.0.1:«P»/v1x",
    "http://127.0.0.1:«P»/v1x/echo",
    "http://127.0.0.1:«P»/v1.evil/echo",
    "http://127.0.0.1:«P»/v1%2fecho",
    "http://127.0.0.1:«P»/v1;x/echo",
    "http://127.0.0.1:«P»/V1/echo",
    "http://127.0.0.1:«P»/v",
    "http://127.0.0.1:«P»/",
    "http://127.0.0.1:«P»",
    "http://127.0.0.1:«P»/echo",
    "http://127.0.0.1:«P»/v1/../echo",
    "http://127.0.0.1:«P»/v1/%2e%2e/echo",
    "http://127.0.0.1:«P»/v1/..%2F..%2Fecho",
    "http://127.0.0.1:«P»//v1/echo",
]


def _refused(r: httpx.Response) -> bool:
    if r.status_code not in (400, 403, 414):
        return False
    code = r.json()["error"]["code"]
    return code in {400: {"invalid_request"}, 403: {"destination_not_allowed"}, 414: {"uri_too_long"}}[r.status_code]


def test_request_api_url_tricks_are_refused_and_send_nothing(env: Env) -> None:
    wrong = []
    for template in REFUSED_URLS:
        url = _expand(template, env)
        r = env.sonar(env.root, url)
        if not _refused(r):
            wrong.append((template, r.status_code, r.text[:200]))
    for template in REFUSED_V1_URLS:
        url = _expand(template, env)
        r = env.sonar(env.v1, url)
        if not _refused(r):
            wrong.append((template, r.status_code, r.text[:200]))
    assert wrong == []
    assert env.upstream.requests == [] and env.upstream.connections == 0
    env.evil_untouched()
    # the positive controls: the same client, source and upstream do work for well-formed URLs
    for source, url, path in ((env.root, "http://127.0.0.1:«P»/echo?a=1", "/echo?a=1"),
                              (env.root, "HTTP://127.0.0.1:«P»/echo", "/echo"),
                              (env.v1, "http://127.0.0.1:«P»/v1", "/v1"),
                              (env.v1, "http://127.0.0.1:«P»/v1/", "/v1/"),
                              (env.v1, "http://127.0.0.1:«P»/v1/echo/x?y=%2F", "/v1/echo/x?y=%2F")):
        r = env.sonar(source, _expand(url, env))
        assert r.status_code == 200, (url, r.text)
        assert env.upstream.requests[-1].raw_path == path
        assert env.upstream.requests[-1].header("Authorization") == f"Bearer {SECRET}"
    env.evil_untouched()


def test_request_api_headers_cannot_redirect_the_request(env: Env) -> None:
    hostile = {"Host": f"127.0.0.2:{env.evil[0].port}", "X-Forwarded-Host": "127.0.0.2",
               "X-Original-URL": f"http://127.0.0.2:{env.evil[0].port}/", "X-Rewrite-URL": "/steal",
               "Forwarded": "host=127.0.0.2", "Authorization": "Bearer agent-token", "Connection": "Host",
               "X-HTTP-Method-Override": "DELETE", "Proxy-Authorization": "Basic eA=="}
    r = env.sonar(env.root, f"http://127.0.0.1:{env.upstream.port}/echo", headers=hostile)
    assert r.status_code == 200, r.text
    seen = env.upstream.requests[-1]
    assert seen.method == "GET" and seen.raw_path == "/echo"
    assert seen.header("Host") == f"127.0.0.1:{env.upstream.port}"
    assert seen.header("Authorization") == f"Bearer {SECRET}"
    names = {k.lower() for k, _ in seen.headers}
    assert not names & {"x-forwarded-host", "x-original-url", "x-rewrite-url", "forwarded", "proxy-authorization",
                        "x-http-method-override"}
    env.evil_untouched()


def test_no_method_escapes_the_base_path(env: Env) -> None:
    # aiohttp sends CONNECT in authority form (`CONNECT host:port`): the base path would not apply at all;
    # TRACE would have the upstream echo the injected credential back: both are never forwarded
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "FOO", "CONNECT",
                   "connect"):
        r = env.client.post(SONAR.format(env.v1), json={"method": method, "url": f"{env.upstream.url}/v1/echo"})
        if method.upper() in ("CONNECT", "TRACE"):
            assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", r.text
        else:
            assert r.status_code == 200, (method, r.text)
    r = env.client.request("CONNECT", f"/api/{env.ws}/proxy/v1/echo")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", r.text
    seen = env.upstream.requests
    assert len(seen) == 8 and not {"CONNECT", "TRACE"} & {s.method for s in seen}  # FOO: refused by the upstream
    assert all(s.raw_path == "/v1/echo" for s in seen), [(s.method, s.raw_path) for s in seen]
    env.evil_untouched()


# Gateway tails, sent byte-exact. Each must be 400 (or 414 for the long one) with no upstream traffic.
REFUSED_TAILS = [
    "/%2e%2e/echo", "/%2E%2E/echo", "/%2e%2E/echo", "/.%2e/echo", "/%2e./echo", "/../echo", "/./echo", "/..",
    "/echo/..", "/echo/.", "/a/%2e%2e/%2e%2e/echo", "/..;/echo", "/..%3b/echo", "/%2e%2e%3b/echo",
    "/echo%2f..%2f..", "/a%2Fb", "/%2fecho", "/echo%5c..%5cx", "/a%5Cb", "/a\\b", "/echo%00", "/echo%00.json",
    "/%252e%252e/echo", "/%252E%252e/echo", "/%252fecho", "/%255cecho", "/%2500", "/%25252e%25252e/echo",
    "/echo%3f@127.0.0.2", "/echo%23frag", "//127.0.0.2/echo", "/a//b", "/echo%", "/echo%zz", "/echo%0d%0aX:%201",
    "/echo%7f", "/\xe9cho", "/" + "a/" * 200,
]


def test_gateway_tail_escapes_from_the_raw_path_are_400(env: Env) -> None:
    wrong = []
    for tail in REFUSED_TAILS:
        status, body = env.gateway_raw(tail)
        if status not in (400, 414):
            wrong.append((tail, status, body[:200]))
    assert wrong == []
    assert env.upstream.requests == []
    status, _ = env.gateway_raw("/echo/a.b/..c/%41?x=%2e%2e")  # dots inside names and in the query are fine
    assert status == 404  # the upstream's own answer: it has no such route
    assert env.upstream.requests[-1].raw_path == "/echo/a.b/..c/%41?x=%2e%2e"
    env.evil_untouched()


def test_gateway_tail_cannot_reach_another_host(env: Env) -> None:
    e = env.evil[0]
    for tail in (f"/@127.0.0.2:{e.port}/echo", f"/http://127.0.0.2:{e.port}/echo", f"/:{e.port}/echo",
                 f"/.127.0.0.2:{e.port}/echo", f"/%40127.0.0.2:{e.port}/echo"):
        status, _ = env.gateway_raw(tail)
        assert status in (200, 400, 404), tail  # 404: the upstream's own answer for an odd but harmless path
    for seen in env.upstream.requests:  # whatever was accepted went to the source's upstream, under its base
        assert seen.peer[0] == "127.0.0.1"
        assert seen.header("Host") == f"127.0.0.1:{env.upstream.port}"
    env.evil_untouched()


# --- Hypothesis over the live server ------------------------------------------------------------------------------

_SCHEMES = ["http://", "HTTP://", "hTTp://", "https://", "http:/", "http:", "//", "http:\\\\", "ftp://", "http:///",
            " http://", "http://\t", ""]
_USERINFO = ["", "", "", "u@", "u:p@", "127.0.0.1:«P»@", "@", "%40@", "127.0.0.2@", ":@"]
_HOSTS = ["127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2", "localhost", "127.1", "2130706433", "0x7f000001",
          "0177.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:2]", "[::1]", "0.0.0.0", "127.0.0.1.", "127.0.0.01",
          "LOCALHOST", "127\u30020\u30020\u30021", "127.0.0.1%2e", "127.0.0.1\\", "evil.test", "127.0.0.1#",
          "127.0.0.1?", "127.0.0.1/", "[127.0.0.1]", "127.0.0.1%00", "\u0031\u0032\u0037.0.0.1"]
_PORTS = [":«P»", ":«P»", ":«P»", ":«E»", ":«N»", "", ":0", ":0«P»", ":«P»:«N»", ":", ":«P»0", ":+«P»", ": «P»"]
_ATOMS = ["/", "/", "v1", "v1", "v1x", "echo", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "\\", "%00", "%252e", "@",
          ":", ";", "?", "#", "&", "=", "%", "%41", "~", "\t", " ", "\r\n", "\u00e9", "\uff0e", "//", "127.0.0.2",
          "«E»", "a", "b-c", "..;", "%3b", "%23", "%3f", "+", "$", "'", "(", "*", "!", "[", "]", "{", "|"]
_NASTY = st.sampled_from([*"/\\@:.#?%&;=+ \t\r\n\x00\u3002\uff0e\u00e9[]", "%2e", "%2f", "%5c", "%00", "%25", "«E»",
                          "«N»", "127.0.0.2"])


@st.composite
def _composed(draw: st.DrawFn) -> str:
    path = "".join(draw(st.lists(st.sampled_from(_ATOMS), max_size=8)))
    if draw(st.booleans()):
        path = "/v1" + path
    return (draw(st.sampled_from(_SCHEMES)) + draw(st.sampled_from(_USERINFO)) + draw(st.sampled_from(_HOSTS))
            + draw(st.sampled_from(_PORTS)) + path)


_SEGMENTS = st.one_of(st.sampled_from(["echo", "a", "b-c", "x.y", "..c", "%41", "~u", "v1", "a:b", "a@b", "a;b"]),
                      st.text("abcxyz0129-._~", min_size=1, max_size=6), st.sampled_from(_ATOMS))


@st.composite
def _near_valid(draw: st.DrawFn) -> str:
    segments = draw(st.lists(_SEGMENTS, max_size=5))
    query = draw(st.sampled_from(["", "", "?q=1", "?a=%2e%2e/..&b=@127.0.0.2", "?", "?x=«E»"]))
    return draw(st.sampled_from(["http://127.0.0.1:«P»/v1", "HTTP://127.0.0.1:«P»/v1"])) + "".join(
        "/" + s for s in segments) + query


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    url = draw(st.sampled_from(["http://127.0.0.1:«P»/v1/echo?x=1", "http://127.0.0.1:«P»/v1",
                                "http://127.0.0.1:«P»/v1/a/b"]))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(url)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.one_of(_NASTY, st.text(min_size=1, max_size=3)))
        if op == "insert":
            url = url[:i] + piece + url[i:]
        elif op == "replace":
            url = url[:i] + piece + url[i + 1:]
        else:
            url = url[:i] + url[i + 1:]
    return url


def _accepted_shape(url: str, port: int) -> None:
    """What an accepted URL must look like under both parsers (docs/security.md)."""
    parts = urlsplit(url)
    w = ada_url.URL(url)
    assert parts.hostname == "127.0.0.1" and w.hostname == "127.0.0.1", url
    assert parts.port == port and w.port == str(port), url
    assert parts.scheme == "http" and w.protocol == "http:", url
    assert not parts.username and not w.username and not w.password and not parts.fragment, url
    assert parts.path == "/v1" or parts.path.startswith("/v1/"), url


def test_property_accepted_urls_only_reach_the_source_upstream(env: Env) -> None:
    port = env.upstream.port
    stats = {"accepted": 0, "refused": 0}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(template=st.one_of(_composed(), _near_valid(), _mutated()))
    def check(template: str) -> None:
        url = _expand(template, env)
        before = len(env.upstream.requests)
        try:
            r = env.sonar(env.v1, url)
        except UnicodeEncodeError:  # lone surrogates cannot even be sent as JSON by the client
            return
        after = env.upstream.requests
        assert r.status_code != 500
        if r.status_code == 200:
            stats["accepted"] += 1
            _accepted_shape(url, port)
            assert len(after) == before + 1
            parts = urlsplit(url)
            assert after[-1].raw_path == parts.path + (f"?{parts.query}" if parts.query else ""), url
            assert after[-1].header("Host") == f"127.0.0.1:{port}"
        else:
            stats["refused"] += 1
            assert _refused(r), (url, r.status_code, r.text)
            assert len(after) == before
        env.evil_untouched()

    check()
    assert stats["accepted"] > 10 and stats["refused"] > 100, stats  # the generator exercises both outcomes
    assert all(s.peer[0] == "127.0.0.1" for s in env.upstream.requests)


_TAIL_ATOMS = ["/", "a", "echo", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%00", "%25", "%252e", "2e", ";", "@",
               ":", "\\", "%41", "~", "-", "_", "%3f", "%23", "%", "x.y", "..;", "127.0.0.2", "//"]


def test_property_gateway_tails_never_leave_the_base(env: Env) -> None:
    stats = {"accepted": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(atoms=st.lists(st.sampled_from(_TAIL_ATOMS), min_size=1, max_size=8),
           query=st.sampled_from(["", "?q=1", "?a=%2e%2e/..", "?x=@127.0.0.2"]))
    def check(atoms: list[str], query: str) -> None:
        tail = "/" + "".join(atoms)
        before = len(env.upstream.requests)
        status, body = env.gateway_raw(tail + query, slug="v1")
        after = env.upstream.requests
        assert status != 500
        if len(after) > before:
            stats["accepted"] += 1
            assert len(after) == before + 1
            assert after[-1].raw_path == "/v1" + tail + query
            assert after[-1].header("Host") == f"127.0.0.1:{env.upstream.port}"
        else:
            stats["refused"] += 1
            assert status in (400, 414), (tail, status, body[:200])
        env.evil_untouched()

    check()
    assert stats["accepted"] > 5 and stats["refused"] > 30, stats


# --- SSRF at request time -----------------------------------------------------------------------------------------


def test_narrowed_allow_list_blocks_an_existing_source_at_request_time(tmp_path: Path,
                                                                       upstream: FakeUpstream) -> None:
    data = tmp_path / "data"
    with KeyrelayServer(make_settings(data_dir=data)) as first:
        admin = Admin(first.url)
        ws = admin.workspace("ssrf")
        src = admin.source(ws, upstream_url=upstream.url, credentials={"bearer_token": SECRET}, slug="up")
        key = admin.api_key(ws, ["proxy"])
        admin.close()
    assert upstream.connections == 0
    watcher = Watcher(hosts=[f"127.0.0.1:{upstream.port}"])
    with KeyrelayServer(make_settings(data_dir=data, upstream_allow_cidrs="127.0.0.2/32")) as second, \
            watcher.client(second.url, headers={"Authorization": f"Bearer {key}"}) as client:
        for method in ("GET", "POST"):
            r = client.request(method, f"/api/{ws}/proxy/up/echo", content=b"x" if method == "POST" else None)
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "ssrf_blocked"
        r = client.post(SONAR.format(src["id"]), json={"method": "GET", "url": f"{upstream.url}/echo"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "ssrf_blocked"
        admin = Admin(second.url)  # and a new source with that upstream is refused at create time
        r = admin.post("/api/v1/sources", {"workspace_id": ws, "connector": "http", "name": "b", "slug": "b",
                                           "config": {"upstream_url": upstream.url}, "credentials": {}})
        admin.close()
        assert r.status_code == 422 and r.json()["error"]["code"] == "ssrf_blocked"
    assert upstream.connections == 0 and upstream.requests == []
    watcher.verify()


# --- redirects ----------------------------------------------------------------------------------------------------


@pytest.fixture
def qkey_source(env: Env, admin: Admin) -> dict[str, Any]:
    return admin.source(env.ws, upstream_url=env.upstream.url, slug="q",
                        credentials={"api_key": {"value": QSECRET, "query_param": "api_key"}})


def _no_secret(data: bytes | str, *secrets: str) -> None:
    text = data.encode() if isinstance(data, str) else data
    for s in secrets:
        for form in (s, quote(s, safe=""), quote(s, safe="/"), base64.b64encode(s.encode()).decode()):
            assert form.encode() not in text, f"secret leaked as {form!r}"


def test_redirect_to_another_host_is_returned_not_followed_and_scrubbed(env: Env,
                                                                        qkey_source: dict[str, Any]) -> None:
    e = env.evil[0]
    base = f"/api/{env.ws}/proxy/q"
    for status in (301, 302, 303, 307, 308):
        env.upstream.clear()
        # an upstream that echoes the injected key into its Location (raw and percent-encoded)
        to = f"http://127.0.0.2:{e.port}/steal?k={QSECRET}&api_key={quote(QSECRET, safe='')}"
        r = env.client.post(base + "/redirect", params={"to": to, "status": status}, content=b"payload")
        assert r.status_code == status, r.text
        location = r.headers["location"]
        assert location.startswith(f"http://127.0.0.2:{e.port}/steal?") and "[REDACTED]" in location
        _no_secret(location, QSECRET)
        _no_secret(r.content, QSECRET)
        seen = env.upstream.requests
        assert len(seen) == 1 and f"api_key={quote(QSECRET, safe='')}" in seen[0].raw_path  # positive control
    r = env.client.get(base + "/redirect", params={"to": "/echo"})
    assert r.status_code == 302 and r.headers["location"] == "/echo"
    assert [s.raw_path.split("?")[0] for s in env.upstream.requests][-1] == "/redirect"
    # the request API passes the 3xx back inside its envelope, with the same scrubbing
    env.upstream.clear()
    to = f"http://127.0.0.2:{e.port}/steal?api_key={QSECRET}"
    r = env.sonar(qkey_source["id"], f"{env.upstream.url}/redirect?to={quote(to, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json()["status_code"] == 302 and "[REDACTED]" in r.json()["headers"]["location"]
    _no_secret(r.content, QSECRET)
    assert len(env.upstream.requests) == 1
    env.evil_untouched()


# --- secrets echoed by the upstream ---------------------------------------------------------------------------------


def _forms(secret: str) -> list[bytes]:
    return [secret.encode(), quote(secret, safe="").encode(), base64.b64encode(secret.encode()).rstrip(b"=")]


def _assert_scrubbed(r: httpx.Response, *secrets: str) -> None:
    wire = b"".join(k + b": " + v + b"\n" for k, v in r.headers.raw) + r.content
    for s in secrets:
        for form in _forms(s):
            assert form not in wire, f"{form!r} reached the agent"


def test_secret_echoed_in_response_headers_is_redacted(env: Env) -> None:
    b64 = base64.b64encode(SECRET.encode()).decode()
    sets = [f"X-Echo:{SECRET}", f"X-Echo-B64:{b64}", f"X-Echo-Pct:{quote(SECRET, safe='')}",
            f"X-Embedded:before {SECRET} after", f"Location:https://example.test/?t={quote(SECRET, safe='')}"]
    r = env.client.get(f"/api/{env.ws}/proxy/root/headers", params=[("set", s) for s in sets])
    assert r.status_code == 200
    for name in ("x-echo", "x-echo-b64", "x-echo-pct"):
        assert r.headers[name] == "[REDACTED]"
    assert r.headers["x-embedded"] == "before [REDACTED] after"
    _assert_scrubbed(r, SECRET)
    r = env.sonar(env.root, f"{env.upstream.url}/headers?set={quote(sets[0], safe='')}")
    assert r.status_code == 200 and r.json()["headers"]["x-echo"] == "[REDACTED]"
    _assert_scrubbed(r, SECRET)
    assert all(s.header("Authorization") == f"Bearer {SECRET}" for s in env.upstream.requests)  # positive control


def test_secret_echoed_in_the_body_is_redacted_raw_base64_and_percent_encoded(env: Env, admin: Admin,
                                                                              qkey_source: dict[str, Any]) -> None:
    admin.source(env.ws, upstream_url=env.upstream.url, slug="basic",
                 credentials={"basic": {"username": BASIC[0], "password": BASIC[1]}})
    token = base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
    cases = [("root", SECRET, f"Bearer {SECRET}"), ("basic", token, f"Basic {token}"),
             ("q", QSECRET, None)]
    for slug, secret, sent_auth in cases:
        r = env.client.get(f"/api/{env.ws}/proxy/{slug}/echo", params={"x": "1"})
        assert r.status_code == 200, r.text
        assert b"[REDACTED]" in r.content
        _assert_scrubbed(r, secret, SECRET, QSECRET, BASIC[1])
        seen = env.upstream.requests[-1]  # positive controls: the upstream did receive the credential
        if sent_auth is not None:
            assert seen.header("Authorization") == sent_auth
        else:
            assert f"api_key={quote(QSECRET, safe='')}" in seen.raw_path
    r = env.sonar(qkey_source["id"], f"{env.upstream.url}/echo?y=2")  # the request API envelope too
    assert r.status_code == 200 and "[REDACTED]" in r.json()["response_body"]
    _assert_scrubbed(r, QSECRET)


def test_secret_split_across_stream_chunks_never_reaches_the_agent(env: Env) -> None:
    # ~700 KiB echoed back (> the 256 KiB buffer limit, so the response streams): the agent's body holds the
    # secret at a prime stride, so occurrences straddle every chunk boundary the network produces
    filler = b"abcdefghij" * 100
    body = b"".join(filler[: 97 + (i * 31) % 800] + SECRET.encode() for i in range(900))
    with env.client.stream("POST", f"/api/{env.ws}/proxy/root/echo", content=body,
                           extensions={"kr_stream": True}) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers  # streamed through the redactor, not buffered
        pieces = list(r.iter_raw())
    data = b"".join(pieces)
    assert len(pieces) > 1 and len(data) > 256 * 1024
    assert SECRET.encode() not in data and quote(SECRET, safe="").encode() not in data
    assert data.count(b"[REDACTED]") >= 900  # every echoed occurrence (plus the echoed Authorization header)
    assert env.upstream.requests[-1].body == body
    env.watcher.note(r.status_code, data, "stream")


def test_gateway_does_not_resolve_agent_supplied_hosts(env: Env) -> None:
    # a Host header / absolute-form request target naming EVIL changes nothing about the destination
    e = env.evil[0]
    for target, host in ((f"/api/{env.ws}/proxy/root/echo", f"127.0.0.2:{e.port}"),
                         (f"http://127.0.0.2:{e.port}/api/{env.ws}/proxy/root/echo", "127.0.0.1")):
        with socket.create_connection(("127.0.0.1", env.kr.port), timeout=10) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {env.key}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
        env.watcher.note(status, data.partition(b"\r\n\r\n")[2], target)
        assert status in (200, 400, 404), data[:200]
    for seen in env.upstream.requests:
        assert seen.header("Host") == f"127.0.0.1:{env.upstream.port}"
    env.evil_untouched()

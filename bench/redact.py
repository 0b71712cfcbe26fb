#!/usr/bin/env python3
"""Micro-benchmark of response redaction (pipeline/redact.py, pipeline/response.py), one process, no network.

    .venv/bin/python bench/redact.py                       # the working tree's src/
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/redact.py   # another tree (A/B of a change)

Prints the median time of each case over ROUNDS rounds. Cases: `Redactor.redact_bytes` on a 1 KiB JSON body and
`Redactor.stream()` over 1 MiB bodies in 64 KiB chunks, each with no secret present (the common case) and with
16 echoes spliced in; three bodies of 1 MiB: plain ASCII JSON, JSON whose strings are full of `\\uXXXX` escapes
(Python's default `json.dumps` of non-ASCII text, Go's `\\u0026`), and an HTML page with entities. Where the tree
has them, also the parsed-JSON check (`redact_json`) and the decoding of a 1 MiB gzip body (`decode_stream`).
Secrets: three of 24-32 characters plus one Basic pair, as in a source with several credential fields;
`SECRETS=special` swaps one for a secret holding `& < > / + =` (the escape stage's worst case on these bodies),
`SECRETS=one` is a source with one bearer token.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from keyrelay.pipeline import redact  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "7"))
# typical: API keys of letters, digits, '_' and '-', and a Basic pair; special: a secret of the characters
# HTML and JSON encoders escape, which the bodies below are full of (the worst case for the escape stage)
SETS = {"typical": ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "ghp_R7d9Q2mN4vB8kL1pT6sXq0wErTy", "glpat-xR7d9Q2mN4vB8kL1pT6s"],
        "special": ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "ak&live<7Hq9Zz>42/x+y=", "glpat-xR7d9Q2mN4vB8kL1pT6s"],
        "one": ["sk_live_4eC39HqLyjWDarjtT1zdp7dc"]}
SECRETS = SETS[os.environ.get("SECRETS", "typical")]
BASIC = ("svc-user", "b4sic:pa ss/wd")
CHUNK = 64 * 1024


def records(n: int, *, ascii_only: bool) -> list[dict[str, object]]:
    name = "Zoë Ångström-Núñez" if not ascii_only else "Zoe Angstrom-Nunez"
    return [{"id": f"cus_{i:08d}", "object": "customer", "name": f"{name} {i}", "email": f"user{i}@example.com",
             "url": f"https://api.example.com/v1/customers?starting_after=cus_{i:08d}&limit=100",
             "note": "line one\nline two <b>bold</b> & \"quoted\"", "balance": i * 7, "livemode": False}
            for i in range(n)]


def json_body(size: int, *, escaped: bool) -> bytes:
    out, n = b"", 8
    while len(out) < size:
        data = records(n, ascii_only=not escaped)
        text = json.dumps({"data": data}, ensure_ascii=escaped)
        if escaped:  # Go's encoder: & < > as \u0026 \u003c \u003e
            text = text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
        out = text.encode()
        n *= 2
    return out[:size]


def html_body(size: int) -> bytes:
    row = ("<tr><td>cus_0001</td><td>Zo&euml; &amp; co &lt;b&gt;</td><td>&#169; 2024 &#x2014; "
           "<a href=\"/v1/c?a=1&amp;b=2\">next</a></td></tr>\n").encode()
    return (row * (size // len(row) + 1))[:size]


def splice(body: bytes, echo: bytes, count: int = 16) -> bytes:
    step = len(body) // count
    return b"".join(body[i * step:(i + 1) * step] + echo for i in range(count)) + body[count * step:]


def best(fn: Callable[[], object], *, inner: int) -> float:
    """Median seconds per call over ROUNDS rounds of `inner` calls."""
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)


def stream_all(r: redact.Redactor, data: bytes) -> int:
    s = r.stream()
    n = 0
    for i in range(0, len(data), CHUNK):
        n += len(s.feed(data[i:i + CHUNK]))
    return n + len(s.flush())


def main() -> None:
    r = redact.Redactor(SECRETS)
    if len(SECRETS) > 1:
        r.add_basic(*BASIC)
    small = json.dumps({"id": "evt_1", "object": "event", "data": records(3, ascii_only=True)}).encode()[:1024]
    bodies = {"json": json_body(1 << 20, escaped=False), "json-escaped": json_body(1 << 20, escaped=True),
              "html": html_body(1 << 20),
              "every byte": bytes(range(256)) * 4096}  # the shared harness's /big: every escape introducer
    echo_raw = json.dumps(SECRETS[-1]).encode()[1:-1]
    echo_esc = "".join(f"\\u{ord(c):04x}" for c in SECRETS[-1]).encode()
    rows = [("redact_bytes 1 KiB, clean", best(lambda: r.redact_bytes(small), inner=2000)),
            ("redact_bytes 1 KiB, 1 echo", best(lambda: r.redact_bytes(small[:500] + echo_raw + small[500:]),
                                                 inner=2000))]
    for name, body in bodies.items():
        rows.append((f"stream 1 MiB {name}, clean", best(lambda b=body: stream_all(r, b), inner=3)))  # type: ignore[misc]
        dirty = splice(body, echo_raw)
        rows.append((f"stream 1 MiB {name}, 16 raw echoes", best(lambda b=dirty: stream_all(r, b), inner=3)))  # type: ignore[misc]
    rows.append(("stream 1 MiB json, 16 \\u-escaped echoes",
                 best(lambda: stream_all(r, splice(bodies["json"], echo_esc)), inner=3)))
    redact_json = getattr(r, "redact_json", None)
    if redact_json is not None:
        doc = json.loads(small)
        rows.append(("redact_json 1 KiB parsed, clean", best(lambda: redact_json(doc), inner=2000)))
        big = json.loads(bodies["json"].rsplit(b"},", 1)[0] + b"}]}")
        rows.append(("redact_json 1 MiB parsed, clean", best(lambda: redact_json(big), inner=3)))
    try:
        from keyrelay.pipeline import response
    except ImportError:
        response = None  # type: ignore[assignment]
    if response is not None:  # the response policy's per-request header work (no body), 9 typical headers
        from keyrelay.egress.http1 import Response
        raw = [(b"Content-Type", b"application/json"), (b"Content-Length", b"1024"), (b"Date", b"x"),
               (b"Server", b"nginx"), (b"Connection", b"keep-alive"), (b"ETag", b'"abc"'),
               (b"Cache-Control", b"no-cache"), (b"X-Request-Id", b"req_123"), (b"X-RateLimit-Remaining", b"99")]
        try:
            resp = Response(None, 200, raw, 30.0, float("inf"))  # type: ignore[arg-type]  # no connection used
        except TypeError:  # builds before deadlines
            resp = Response(None, 200, raw, 30.0)  # type: ignore[arg-type,call-arg]
        check = getattr(response, "check_coding", None)

        def per_request() -> None:
            if check is not None:
                check(resp, r)
            response.wants_buffer(resp)
            response.headers_for(resp, r, exact_length=False)

        rows.append(("response headers + coding checks, per request", best(per_request, inner=20000)))
    decode_stream = getattr(response, "decode_stream", None)
    if decode_stream is not None:
        packed = gzip.compress(bodies["json"])
        rows.append(("gzip -> identity 1 MiB (%d KiB on the wire)" % (len(packed) // 1024),
                     best(lambda: _drain(decode_stream, packed), inner=3)))
        rows.append(("zlib.decompress alone, same body", best(lambda: gzip.decompress(packed), inner=3)))
    width = max(len(n) for n, _ in rows)
    for name, secs in rows:
        print(f"{name:<{width}}  {secs * 1e6:10.1f} us")


def _drain(decode_stream: Callable[..., object], packed: bytes) -> int:
    import asyncio

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(packed), CHUNK):
            yield packed[i:i + CHUNK]

    async def run() -> int:
        n = 0
        async for piece in decode_stream(chunks(), b"gzip"):  # type: ignore[operator, attr-defined]
            n += len(piece)
        return n

    return asyncio.run(run())


if __name__ == "__main__":
    main()

"""The overview counts the last hour from keyrelay's own request log, on the embedded SQLite default and on
PostgreSQL: requests, refusals, failures, rate-limit hits, upstream failures, the busiest sources, and charts
drawn as SVG without script."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from support.console import ConsoleClient, assert_page_headers
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.upstream import FakeUpstream


def _stats(page: str) -> dict[str, str]:
    """Label -> shown value of the overview's figures."""
    return {label.strip(): value.strip() for label, value in re.findall(
        r'<div class="label">([^<]+)</div>\s*<div class="value">([^<]+)</div>', page)}


def _poll(c: ConsoleClient, want: dict[str, str], deadline: float = 5.0) -> dict[str, Any]:
    """The overview's figures once they show `want` (the request log is written in batches)."""
    end = time.monotonic() + deadline
    while True:
        page = c.get("/console/")
        stats = _stats(page.text)
        if all(stats.get(k) == v for k, v in want.items()) or time.monotonic() > end:
            return {"stats": stats, "page": page}
        time.sleep(0.05)


def test_the_overview_counts_requests_from_the_request_log(kr_settings: dict[str, Any], database_url: str | None,
                                                           upstream: FakeUpstream) -> None:
    kr_settings["database_url"] = database_url  # SQLite (the embedded default) and PostgreSQL
    with KeyrelayServer(make_settings(**kr_settings)) as kr:
        admin = Admin(kr.url)
        ws = admin.workspace("acme")
        admin.source(ws, upstream_url=upstream.url, slug="crm", policy={"rate_limit_per_minute": 6})
        admin.source(ws, upstream_url="http://127.0.0.1:9", slug="down")  # nothing listens there
        key = admin.api_key(ws, ["proxy"])
        auth = {"Authorization": f"Bearer {key}"}
        statuses = [httpx.get(f"{kr.url}/api/{ws}/proxy/crm/echo", headers=auth).status_code for _ in range(7)]
        assert statuses == [200] * 6 + [429]
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/down/x", headers=auth).status_code == 502
        assert httpx.get(f"{kr.url}/api/{ws}/proxy/crm/echo", headers={"Authorization": "Bearer kr_" + "x" * 43}
                         ).status_code == 401
        c = ConsoleClient(kr.url).signed_in()
        got = _poll(c, {"Upstream failures": "1", "Refused": "2"})
        admin.close()
    stats, page = got["stats"], got["page"]
    assert stats["Rate-limited"] == "1" and stats["Upstream failures"] == "1" and stats["Refused"] == "2"
    assert stats["Error rate"] == "11.1 %"  # 1 failure in 9 requests
    assert stats["Requests / min"] == "0.1"  # 9 in the hour
    assert stats["Latency p50"].endswith(("ms", "s"))
    assert_page_headers(page)
    busiest = page.text.split("Busiest sources")[1]
    assert busiest.index(">crm</a>") < busiest.index(">down</a>")  # 7 requests, then 1
    svg = re.findall(r"<svg[^>]*>.*?</svg>", page.text, re.S)
    assert len(svg) == 2 and "<script" not in "".join(svg) and " style=" not in "".join(svg)
    minutes = set(re.findall(  # each bar says what it counts (a minute's parts repeat it); 9 may span 2 minutes
        r"<title>(\d\d:\d\d) UTC: (\d+) requests \((\d+) answered, (\d+) refused, (\d+) failed\)</title>", svg[0]))
    assert [sum(int(m[i]) for m in minutes) for i in range(1, 5)] == [9, 6, 2, 1]


def test_a_new_server_shows_first_steps_and_empty_charts(kr: KeyrelayServer) -> None:
    c = ConsoleClient(kr.url).signed_in()
    page = c.get("/console/").text
    assert "Get started" in page and 'href="/console/workspaces">Create a workspace' in page
    assert page.count("No requests in the last hour") == 2
    assert _stats(page)["Requests / min"] == "0" and _stats(page)["Latency p95"] == "\u2014"

"""A narrowed token on a live keyrelay: each constraint refuses by name (403, `"constraint"`) with nothing sent
upstream, on the gateway, the request API, execute and stream query; observe mode lets the request through and
logs `would_deny`; a budget admits exactly its count; the refusals are logged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyrelay.egress.destination import parse_base_url
from keyrelay.model import ById, BySlug, Door, Inbound, Tail, Url
from keyrelay.pipeline.guard import upstream_path, window
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer, make_settings
from support.upstream import FakeUpstream


def test_the_upstream_path_is_the_validated_path_below_the_base() -> None:
    base = parse_base_url("https://api.example.com/v1")
    gw = Inbound(door=Door.GATEWAY, method="GET", path="", authorization=None, source=BySlug("w", "s"),
                 target=Tail("customers/%63us_1", "limit=3"))
    assert upstream_path(gw, base) == "/customers/cus_1"
    api = Inbound(door=Door.SONAR, method="GET", path="", authorization=None, source=ById("s"),
                  target=Url("https://api.example.com/v1/customers/cus_1?x=1"))
    assert upstream_path(api, base) == "/customers/cus_1"
    top = Inbound(door=Door.SONAR, method="GET", path="", authorization=None, source=ById("s"),
                  target=Url("https://api.example.com/v1"))
    assert upstream_path(top, base) == "/"
    assert upstream_path(Inbound(door=Door.EXECUTE, method="POST", path="", authorization=None,
                                 source=ById("s")), base) is None


def test_budget_windows_are_clock_hours_and_days() -> None:
    assert window(None, 1e9) == 0
    assert window("hour", 7200.0) == 2 and window("hour", 7199.9) == 1
    assert window("day", 86400.0 * 3 + 5) == 3


@dataclass
class World:
    kr: KeyrelayServer
    admin: Admin
    ws: str
    echo: dict[str, Any]
    other: dict[str, Any]
    stripe_src: dict[str, Any]
    upstream: FakeUpstream
    stripe: FakeStripe

    def key(self, constraints: dict[str, Any], scopes: tuple[str, ...] = ("proxy", "execute", "query",
                                                                          "logs")) -> dict[str, str]:
        r = self.admin.post("/api/v1/api-keys", {"workspace_id": self.ws, "scopes": list(scopes),
                                                 "constraints": constraints})
        assert r.status_code == 201, r.text
        assert r.json()["constraints"]["mode"] in ("enforce", "observe")
        return {"Authorization": f"Bearer {r.json()['key']}"}

    def gateway(self, auth: dict[str, str], tail: str = "echo", *, method: str = "GET", slug: str = "echo",
                **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.kr.url}/api/{self.ws}/proxy/{slug}/{tail}", headers=auth, timeout=20,
                             **kw)

    def sonar(self, auth: dict[str, str], url: str, method: str = "GET", **body: Any) -> httpx.Response:
        return httpx.post(f"{self.kr.url}/api/v1/sonar/apis/{self.echo['id']}/request",
                          json={"method": method, "url": url, **body}, headers=auth, timeout=20)

    def execute(self, auth: dict[str, str], entity: str, action: str, **params: Any) -> httpx.Response:
        return httpx.post(f"{self.kr.url}/api/v1/connectors/instances/{self.stripe_src['id']}/execute",
                          json={"entity": entity, "action": action, "params": params}, headers=auth, timeout=20)


@pytest.fixture
def world(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> Iterator[World]:
    ws = admin.workspace("narrow")
    echo = admin.source(ws, upstream_url=upstream.url, slug="echo")
    other = admin.source(ws, upstream_url=upstream.url, slug="other")
    with FakeStripe() as stripe:
        src = admin.source(ws, upstream_url="", connector="stripe", slug="stripe", config={"base_url": stripe.url},
                           credentials={"api_key": API_KEY})
        yield World(kr, admin, ws, echo, other, src, upstream, stripe)


def refused_by(r: httpx.Response, kind: str) -> bool:
    err = r.json()["error"]
    return r.status_code == 403 and err["code"] == "forbidden" and err["constraint"] == kind


def test_sources_limit_which_sources_a_key_reaches(world: World) -> None:
    by_slug = world.key({"sources": ["echo"]})
    by_id = world.key({"sources": [world.echo["id"]]})
    for auth in (by_slug, by_id):
        assert world.gateway(auth).status_code == 200
        before = len(world.upstream.requests)
        assert refused_by(world.gateway(auth, slug="other"), "sources")
        assert len(world.upstream.requests) == before


def test_methods_paths_and_body_size_refuse_on_the_gateway(world: World) -> None:
    auth = world.key({"methods": ["GET", "POST"], "paths": ["/echo", "/status/*"], "max_body_bytes": 8})
    assert world.gateway(auth, "echo").status_code == 200
    assert world.gateway(auth, "status/204").status_code == 204
    assert world.gateway(auth, "%65cho").status_code == 200  # the same path, spelled otherwise
    before = len(world.upstream.requests)
    assert refused_by(world.gateway(auth, "slow"), "paths")
    assert refused_by(world.gateway(auth, "status/204/x"), "paths")
    assert refused_by(world.gateway(auth, "echo", method="DELETE"), "methods")
    assert refused_by(world.gateway(auth, "echo", method="POST", content=b"0123456789"), "max_body_bytes")

    def chunks() -> Iterator[bytes]:
        yield b"12"

    assert refused_by(world.gateway(auth, "echo", method="POST", content=chunks()), "max_body_bytes")
    assert len(world.upstream.requests) == before
    assert world.gateway(auth, "echo", method="POST", content=b"01234567").status_code == 200


@pytest.mark.parametrize("only", [{"methods": ["GET"]}, {"paths": ["/status/*"]}, {"max_body_bytes": 4},
                                  {"sources": ["other"]}])
def test_each_kind_alone_refuses_on_the_gateway(world: World, only: dict[str, Any]) -> None:
    """A token narrowed by one kind only (the guard works out once per token which checks a chain needs)."""
    auth = world.key(only)
    before = len(world.upstream.requests)
    assert refused_by(world.gateway(auth, "echo", method="POST", content=b"0123456789"), next(iter(only)))
    assert len(world.upstream.requests) == before


def test_the_request_api_checks_the_url_path(world: World) -> None:
    auth = world.key({"paths": ["/echo"], "methods": ["GET"]})
    assert world.sonar(auth, world.upstream.url + "/echo").json()["status_code"] == 200
    before = len(world.upstream.requests)
    assert refused_by(world.sonar(auth, world.upstream.url + "/slow"), "paths")
    assert refused_by(world.sonar(auth, world.upstream.url + "/echo", method="PUT", body="x"), "methods")
    assert len(world.upstream.requests) == before


def test_actions_and_upstream_calls_are_checked_on_execute_and_query(world: World) -> None:
    auth = world.key({"actions": ["customers.list", "invoices.*"]})
    assert world.execute(auth, "customers", "list", limit=2).status_code == 200
    assert world.execute(auth, "invoices", "list", limit=2).status_code == 200
    before = len(world.stripe.requests)
    refused = world.execute(auth, "customers", "get", id="cus_0001")
    assert refused_by(refused, "actions")
    q = httpx.post(f"{world.kr.url}/v1/proxy/sources/{world.stripe_src['id']}/query", headers=auth, timeout=20,
                   json={"stream": "balance_transactions"})
    assert refused_by(q, "actions")
    assert httpx.post(f"{world.kr.url}/v1/proxy/sources/{world.stripe_src['id']}/query", headers=auth, timeout=20,
                      json={"stream": "customers"}).status_code == 200
    assert len(world.stripe.requests) == before + 1
    # the path constraint applies to the requests execute sends upstream too
    paths = world.key({"paths": ["/v1/customers"]})
    assert world.execute(paths, "customers", "list", limit=1).status_code == 200
    before = len(world.stripe.requests)
    assert refused_by(world.execute(paths, "customers", "get", id="cus_0001"), "paths")
    assert len(world.stripe.requests) == before


def test_observe_mode_lets_requests_through_and_logs_would_deny(world: World) -> None:
    auth = world.key({"methods": ["GET"], "mode": "observe"})
    r = world.gateway(auth, "echo", method="DELETE")
    assert r.status_code == 200
    assert world.gateway(auth, "echo").status_code == 200
    # both rows: the request log is written in batches, the GET's may come in a later one
    rows = wait_for_logs(world, auth, lambda rows: {e["method"] for e in rows} >= {"DELETE", "GET"})
    assert [e["would_deny"] for e in rows if e["method"] == "DELETE"] == ["methods"]
    assert [e["would_deny"] for e in rows if e["method"] == "GET"] == [None]
    metrics = httpx.get(world.kr.url + "/metrics").text
    assert 'keyrelay_would_deny_total{rule="methods"} 1.0' in metrics


def test_a_budget_admits_exactly_its_count_and_refusals_are_logged(world: World) -> None:
    auth = world.key({"budget": {"requests": 3, "per": "day"}})
    free = world.key({})
    statuses = [world.gateway(auth).status_code for _ in range(3)]
    before = len(world.upstream.requests)
    last = world.gateway(auth)
    assert statuses == [200, 200, 200] and refused_by(last, "budget")
    assert len(world.upstream.requests) == before
    assert all(world.gateway(free).status_code == 200 for _ in range(5))  # only budgeted tokens pay
    rows = wait_for_logs(world, auth, lambda rows: any(e["status"] == 403 for e in rows))
    assert [e["error_code"] for e in rows if e["status"] == 403] == ["forbidden"]


def wait_for_logs(world: World, auth: dict[str, str], done: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        rows: list[dict[str, Any]] = httpx.get(world.kr.url + "/api/v1/logs", headers=auth, timeout=20).json()["data"]
        mine = [e for e in rows if e["path"].startswith(f"/api/{world.ws}/proxy/")]
        if done(mine):
            return mine
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_file_reads_count_as_get_and_obey_sources(kr_settings: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    kr_settings["local_roots"] = str(tmp_path)
    with KeyrelayServer(make_settings(**kr_settings)) as kr:
        admin = Admin(kr.url)
        ws = admin.workspace("files")
        src = admin.post("/api/v1/sources", {"workspace_id": ws, "connector": "local", "name": "docs",
                                             "slug": "docs", "config": {"root": str(root)}, "credentials": {}}).json()

        def key(constraints: dict[str, Any]) -> dict[str, str]:
            made = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["files"],
                                                   "constraints": constraints}).json()
            return {"Authorization": f"Bearer {made['key']}"}

        url = f"{kr.url}/api/v1/sonar/files/{src['id']}/get/a.txt"
        assert httpx.get(url, headers=key({"methods": ["GET"], "sources": ["docs"]})).text == "hello"
        assert refused_by(httpx.get(url, headers=key({"methods": ["POST"]})), "methods")
        assert refused_by(httpx.get(url, headers=key({"sources": ["other"]})), "sources")
        admin.close()

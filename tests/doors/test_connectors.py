"""The declarative connector routes (doors/connectors.py) on a live keyrelay with a fake Stripe: streams list,
stream query and execute bodies, and instance lookup by workspace name, each confined to the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer

STRIPE_DEFINITION = "e094cb9a-26de-4645-8761-65c0c425d1de"


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, stripe: FakeStripe) -> dict[str, Any]:
    ws = admin.workspace("acme")
    src = admin.source(ws, upstream_url="", connector="stripe", slug="stripe", config={"base_url": stripe.url},
                       credentials={"api_key": API_KEY})
    key = admin.api_key(ws, ["execute", "query"])
    return {"ws": ws, "src": src, "auth": {"Authorization": f"Bearer {key}"}, "kr": kr.url,
            "exec": f"{kr.url}/api/v1/connectors/instances/{src['id']}/execute",
            "query": f"{kr.url}/v1/proxy/sources/{src['id']}/query"}


def test_streams_are_listed_with_filters(env: dict[str, Any], admin: Admin) -> None:
    out = admin.get(f"/api/v1/sources/{env['src']['id']}/streams").json()["data"]
    customers = next(s for s in out if s["name"] == "customers")
    names = {f["name"] for f in customers["filters"]}
    assert "email" in names and "starting_after" not in names and "limit" not in names
    assert customers["page_size"] == {"default": 10, "max": 100}


def test_another_tenant_cannot_list_the_streams(env: dict[str, Any], admin: Admin) -> None:
    other = admin.scoped_token("other-tenant")
    r = httpx.get(f"{env['kr']}/api/v1/sources/{env['src']['id']}/streams",
                  headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("url,body,field", [
    ("query", {"stream": "customers", "surprise": 1}, "surprise"),
    ("query", {"stream": ""}, "stream"),
    ("exec", {"action": "list"}, "entity"),
    ("exec", {"entity": "customers", "action": "list", "params": [1]}, "params"),
])
def test_an_invalid_body_names_the_field_and_sends_nothing(env: dict[str, Any], stripe: FakeStripe, url: str,
                                                           body: dict[str, Any], field: str) -> None:
    r = httpx.post(env[url], json=body, headers=env["auth"])
    assert r.status_code == 400 and r.json()["error"]["field"] == field
    assert stripe.requests == []


def test_instances_for_user_finds_sources_by_workspace_name_and_definition(env: dict[str, Any],
                                                                           admin: Admin) -> None:
    for definition in (STRIPE_DEFINITION, "stripe", None):
        params = {"external_user_id": "acme"} | ({} if definition is None else {"definition_id": definition})
        r = admin.get("/api/v1/connectors/instances_for_user", params=params)
        assert r.json() == {"instances": [{"id": env["src"]["id"], "name": "stripe"}]}, definition
    assert admin.get("/api/v1/connectors/instances_for_user",
                     params={"external_user_id": "acme", "definition_id": "github"}).json() == {"instances": []}
    none = admin.get("/api/v1/connectors/instances_for_user", params={"external_user_id": "nobody"})
    assert none.json() == {"instances": []}


def test_instances_of_another_tenant_are_never_listed(env: dict[str, Any], admin: Admin) -> None:
    other = admin.scoped_token("other-tenant")
    r = httpx.get(f"{env['kr']}/api/v1/connectors/instances_for_user", params={"external_user_id": "acme"},
                  headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 200 and r.json() == {"instances": []}

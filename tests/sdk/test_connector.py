"""Connector facades built from the live catalog: attribute access, parameter checks before sending, and
auto-paging by cursor (Stripe), offset (Jira) and, for URL-paged streams, the stream query (Zendesk)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from keyrelay_client import Forbidden, InvalidParameter, LookupFailed, UnknownAction, UnknownEntity
from keyrelay_client.connector import ActionSpec, ParamSpec
from support.fakes import jira, zendesk
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import Admin, KeyrelayServer


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def agent(connect: Any, server: KeyrelayServer, raw: Admin, workspace: dict[str, str]) -> Any:
    return connect(server.url, api_key=raw.api_key(workspace["id"], ["execute", "query"]))


@pytest.fixture
def stripe_facade(agent: Any, raw: Admin, workspace: dict[str, str], stripe: FakeStripe) -> Any:
    raw.source(workspace["id"], upstream_url="", connector="stripe", slug="stripe", config={"base_url": stripe.url},
               credentials={"api_key": API_KEY})
    return agent.connector("stripe", workspace=workspace["name"])


def query_of(raw_path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(raw_path).query)


def test_a_list_pages_by_cursor_through_every_record(stripe_facade: Any, stripe: FakeStripe) -> None:
    ids = [c["id"] for c in stripe_facade.customers.list(limit=10)]
    assert ids == [f"cus_{i:04d}" for i in range(25)]
    sent = [query_of(r.raw_path) for r in stripe.requests]
    assert [q.get("starting_after") for q in sent] == [None, ["cus_0009"], ["cus_0019"]]
    assert all(q["limit"] == ["10"] for q in sent)


def test_pages_carry_connector_metadata_and_stop_early_on_request(stripe_facade: Any, stripe: FakeStripe) -> None:
    first = stripe_facade.customers.list(limit=3).first_page()
    assert [c["id"] for c in first.items] == ["cus_0000", "cus_0001", "cus_0002"]
    assert first.metadata == {"has_more": True, "next_cursor": "cus_0002"} and first.next == "cus_0002"
    assert len(stripe.requests) == 1  # nothing fetched beyond what was asked for


def test_search_pages_by_its_own_page_param(stripe_facade: Any, stripe: FakeStripe) -> None:
    found = list(stripe_facade.customers.search(query="created>0", limit=10))
    assert len(found) == 25
    assert [query_of(r.raw_path).get("page") for r in stripe.requests] == [None, ["10"], ["20"]]


def test_single_object_actions_return_the_object(stripe_facade: Any) -> None:
    assert stripe_facade.customers.get(id="cus_0004")["email"] == "user4@example.com"
    assert stripe_facade.balance.get()["available"][0]["amount"] == 12345


def test_writes_follow_the_source_policy(stripe_facade: Any, stripe: FakeStripe) -> None:
    with pytest.raises(Forbidden):
        stripe_facade.customers.create(email="new@example.com")
    assert stripe.requests == []


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda f: f.invoices_typo, UnknownEntity, "stripe has no entity 'invoices_typo'; entities: balance, "),
    (lambda f: f.customers.destroy, UnknownAction, "customers has no action 'destroy'; actions: create, "),
    (lambda f: f.customers.list(limt=3), InvalidParameter,
     "Unknown parameter 'limt' for customers.list; valid parameters: created, created_gte"),
    (lambda f: f.customers.list(limit="3"), InvalidParameter, "Parameter 'limit' of customers.list must be of type"),
    (lambda f: f.customers.list(limit=1000), InvalidParameter, "must be between 1 and 100"),
    (lambda f: f.customers.get(), InvalidParameter, "Missing required parameter 'id' for customers.get"),
    (lambda f: f.customers.list(limit=True), InvalidParameter, "must be of type integer"),
])
def test_mistakes_are_named_before_anything_is_sent(stripe_facade: Any, stripe: FakeStripe, call: Any,
                                                     error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        call(stripe_facade)
    assert message in str(err.value)
    assert stripe.requests == []


def test_the_facade_lists_what_it_offers(stripe_facade: Any) -> None:
    assert "customers" in stripe_facade.entities and "customers" in dir(stripe_facade)
    assert stripe_facade.customers.actions == ["create", "delete", "get", "list", "search", "update"]
    assert {"email", "limit", "starting_after"} <= set(stripe_facade.customers.list.params)
    assert stripe_facade.entity("customers").action("list").spec.paging.page_param == "starting_after"
    assert not hasattr(stripe_facade, "_private")


def test_binding_names_what_is_missing_or_ambiguous(agent: Any, client: Any, raw: Admin,
                                                    workspace: dict[str, str], stripe: FakeStripe) -> None:
    with pytest.raises(LookupFailed, match="no stripe source"):
        agent.connector("stripe", workspace=workspace["id"])
    for slug in ("stripe-eu", "stripe-us"):
        raw.source(workspace["id"], upstream_url="", connector="stripe", slug=slug, config={"base_url": stripe.url},
                   credentials={"api_key": API_KEY})
    with pytest.raises(LookupFailed, match=r"several stripe sources \(stripe-eu, stripe-us\)"):
        agent.connector("stripe", workspace=workspace["name"])
    us = client.connector("stripe", workspace=workspace["name"], source="stripe-us")
    assert us.source.slug == "stripe-us" and us.source.config == {"base_url": stripe.url}  # the admin listing
    eu = agent.connector("stripe", workspace=workspace["name"], source="stripe-eu")
    assert (eu.source.name, eu.source.slug, eu.source.config) == ("stripe-eu", "", {})  # the agents' lookup
    assert [c["id"] for c in us.customers.list(limit=2).first_page().items] == ["cus_0000", "cus_0001"]


def test_offset_paging_advances_until_a_short_page(agent: Any, raw: Admin, workspace: dict[str, str]) -> None:
    with jira.FakeJira() as fake:
        raw.source(workspace["id"], upstream_url="", connector="jira", slug="jira",
                   config={"subdomain": "acme", "base_url": fake.url},
                   credentials={"username": jira.USERNAME, "password": jira.API_TOKEN})
        facade = agent.connector("jira", workspace=workspace["id"])
        keys = [p["key"] for p in facade.projects.list(maxResults=10)]
        starts = [query_of(r.raw_path).get("startAt") for r in fake.requests]
    assert keys == [f"P{i:02d}" for i in range(23)]
    assert starts == [None, ["10"], ["20"]]


def test_url_paged_stream_lists_go_through_the_stream_query(agent: Any, raw: Admin,
                                                            workspace: dict[str, str]) -> None:
    with zendesk.FakeZendesk() as fake:
        raw.source(workspace["id"], upstream_url="", connector="zendesk-support", slug="zd",
                   config={"subdomain": "acme", "base_url": fake.url + "/api/v2"},
                   credentials={"email": zendesk.EMAIL, "api_token": zendesk.API_TOKEN})
        facade = agent.connector("zendesk-support", workspace=workspace["id"])
        ids = [t["id"] for t in facade.tickets.list(per_page=10)]
        pages = [query_of(r.raw_path).get("page") for r in fake.requests]
    assert ids == [35436 + i for i in range(23)]
    assert pages == [None, ["2"], ["3"]]


def test_param_checks_without_a_server() -> None:
    action = ActionSpec(entity="things", name="list", description="", writes=False, collection=True, stream=True,
                        params={"kind": ParamSpec("kind", "string", required=False, enum=("a", "b")),
                                "ids": ParamSpec("ids", "array", required=False),
                                "owner": ParamSpec("owner", "string", required=True, has_default=True)},
                        paging=None)
    assert action.check({"kind": "a", "ids": ("x",), "owner": None}) == {"kind": "a", "ids": ("x",)}
    with pytest.raises(InvalidParameter, match="one of: a, b"):
        action.check({"kind": "c"})

"""Every shipped API connector against a fake of its upstream on 127.0.0.1: each stream walked to the end through
page tokens, execute list / get / search with the flat connector_metadata Airbyte clients expect, the Airbyte
check() call, a write, the upstream's auth scheme, and error mapping (429 with Retry-After, not found, unknown
entity)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from keyrelay.connectors import extract
from keyrelay.connectors.spec import load_catalog
from support.fakes import github, gong, hubspot, jira, salesforce, shopify, stripe, zendesk
from support.fakes.base import FakeApi
from support.keyrelay import Admin, KeyrelayServer, make_settings

Ids = Callable[[Any], list[Any]]


@dataclass(frozen=True)
class Stream:
    expected: Ids  # the ids the fake holds for this stream, in order
    key: str = "id"  # dot path of the id in a record
    filters: dict[str, Any] = field(default_factory=dict)
    limit: int | None = 8  # page size asked for (None: the API decides)
    min_pages: int = 3


@dataclass(frozen=True)
class Call:
    entity: str
    action: str
    params: dict[str, Any]
    check: Callable[[Any, Any], None]  # (result, fake) -> asserts
    meta: tuple[str, ...] = ()  # flat connector_metadata keys Airbyte's typed results read
    nested: tuple[str, ...] = ()  # connector_metadata keys holding an object (Gong's `pagination`)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], FakeApi]
    credentials: dict[str, Any]
    auth: Callable[[str], bool]  # the Authorization-like header the fake received -> ok?
    auth_header: str
    streams: dict[str, Stream]
    calls: list[Call]
    check_entity: str  # what Airbyte's check() lists with {"limit": 1}
    missing: tuple[str, dict[str, Any], int]  # a get of an object that does not exist -> status
    write: Call
    config: dict[str, Any] = field(default_factory=dict)
    base_path: str = ""
    retry_after: tuple[str, str] = ("120", "120")  # upstream Retry-After (beyond the deadline: not retried) -> ours


def _ids(rows: list[Any], key: str = "id") -> list[Any]:
    return [extract.get(r, key) for r in rows]


def _table(attr: str, name: str, key: str = "id") -> Ids:
    """Ids of the fake's `attr[name]` rows."""
    return lambda fake: _ids(getattr(fake, attr)[name], key)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _eq(path: str, value: Any) -> Callable[[Any, Any], None]:
    def check(result: Any, fake: Any) -> None:
        assert extract.get(result, path) == value, result

    return check


def _count(n: int, key: str = "id", first: Any = None) -> Callable[[Any, Any], None]:
    def check(result: Any, fake: Any) -> None:
        assert isinstance(result, list) and len(result) == n, result
        if first is not None:
            assert extract.get(result[0], key) == first, result[0]

    return check


def _holds(predicate: Callable[[Any, Any], bool]) -> Callable[[Any, Any], None]:
    def check(result: Any, fake: Any) -> None:
        assert predicate(result, fake), result

    return check


def _github_body(fake: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(fake.requests[-1].body))


def _check_github_issue(result: Any, fake: Any) -> None:
    assert result["number"] == 24 and result["title"] == "Flaky test"
    seen = fake.requests[-1]
    assert seen.method == "POST" and seen.raw_path == "/repos/octo-org/hello/issues"  # owner/repo from config
    assert _github_body(fake) == {"title": "Flaky test", "labels": ["ci"]}


def _check_gh_vars(result: Any, fake: Any) -> None:
    body = _github_body(fake)
    assert body["variables"] == {"username": "octo-org", "first": 3}  # default from config, limit -> first
    assert body["query"].lstrip().startswith("query(") and "repositoryOwner(login: $username)" in body["query"]
    assert len(result) == 3


def _check_zendesk_comment(result: Any, fake: Any) -> None:
    import json

    assert json.loads(fake.requests[-1].body) == {"ticket": {"comment": {"body": "On it", "public": False}}}
    assert fake.requests[-1].method == "PUT" and fake.comments[-1]["body"] == "On it"


def _check_body(expected: dict[str, Any], method: str) -> Callable[[Any, Any], None]:
    def check(result: Any, fake: Any) -> None:
        import json

        assert fake.requests[-1].method == method
        assert json.loads(fake.requests[-1].body) == expected

    return check


CASES = [
    Case(
        name="stripe", make=lambda: stripe.FakeStripe(), credentials={"api_key": stripe.API_KEY},
        auth=lambda h: h == f"Bearer {stripe.API_KEY}", auth_header="Authorization",
        streams={name: Stream(_table("objects", name), limit=10)
                 for name in ("customers", "invoices", "charges", "subscriptions", "products", "prices",
                              "payment_intents", "balance_transactions", "refunds", "disputes", "payouts")},
        calls=[
            Call("customers", "list", {"limit": 3, "created": {"gte": 1_699_999_990}}, _count(3, first="cus_0000"),
                 ("has_more",)),
            Call("disputes", "get", {"id": "dp_0002"}, _eq("id", "dp_0002")),
            Call("balance", "get", {}, _eq("available.0.amount", 12345)),
            Call("invoices", "search", {"query": "email:'user3@example.com'"}, _eq("data.0.id", "in_0003")),
        ],
        check_entity="customers", missing=("customers", {"id": "cus_nope"}, 404),
        write=Call("customers", "create", {"email": "x@example.com", "metadata": {"tier": "gold"}},
                   _holds(lambda r, f: f.requests[-1].body == b"email=x%40example.com&metadata%5Btier%5D=gold")),
    ),
    Case(
        name="github", make=lambda: github.FakeGitHub(), credentials={"token": github.TOKEN},
        config={"owner": github.OWNER, "repo": github.REPO},
        auth=lambda h: h == f"Bearer {github.TOKEN}", auth_header="Authorization",
        streams={
            "repositories": Stream(lambda f: _ids(f.repos), limit=5),
            "org_repositories": Stream(lambda f: _ids(f.repos), limit=5),
            "issues": Stream(lambda f: _ids(f.issues), limit=5),
            "pull_requests": Stream(lambda f: _ids(f.pulls), limit=5),
            "comments": Stream(lambda f: _ids(f.comments), filters={"number": 1}, limit=5),
            "users": Stream(lambda f: _ids(f.users), limit=5),
            "commits": Stream(lambda f: _ids(f.commits, "oid"), key="oid", limit=5),
        },
        calls=[
            Call("repositories", "list", {"limit": 3}, _check_gh_vars, ("has_next_page", "end_cursor")),
            Call("issues", "list", {"states": ["CLOSED"], "per_page": 50},
                 _holds(lambda r, f: [i["state"] for i in r] == ["CLOSED"] * 8), ("has_next_page", "end_cursor")),
            Call("issues", "get", {"number": 4}, _eq("title", "Bug 4")),
            Call("repositories", "search", {"query": "repo-07 org:octo-org"}, _count(1, "name", "repo-07"),
                 ("has_next_page", "end_cursor", "total_count")),
            Call("pull_requests", "api_search", {"query": "repo:octo-org/hello is:pr fix"}, _count(10),
                 ("has_next_page", "end_cursor", "total_count")),
            Call("viewer", "get", {}, _eq("login", "octocat")),
            Call("comments", "get", {"id": "IC_kwDO0002"}, _eq("body", "Comment 2")),
        ],
        check_entity="repositories", missing=("issues", {"owner": "octo-org", "repo": "nope", "number": 1}, 422),
        write=Call("issues", "create", {"title": "Flaky test", "labels": ["ci"]}, _check_github_issue),
    ),
    Case(
        name="gong", make=lambda: gong.FakeGong(page_size=8),
        credentials={"access_key": gong.ACCESS_KEY, "access_key_secret": gong.ACCESS_SECRET},
        auth=lambda h: h == _basic(gong.ACCESS_KEY, gong.ACCESS_SECRET), auth_header="Authorization",
        streams={
            "users": Stream(lambda f: _ids(f.users), limit=None),
            "calls": Stream(lambda f: f.public_call_ids, limit=None),
            "calls_extensive": Stream(lambda f: f.public_call_ids, key="metaData.id", limit=None),
            "call_transcripts": Stream(lambda f: _ids(f.calls), key="callId",
                                       filters={"filter": {"fromDateTime": "2026-01-01T00:00:00Z"}}, limit=None),
            "workspaces": Stream(lambda f: [gong.WORKSPACE, "623457276584335"], limit=None, min_pages=1),
            "library_folders": Stream(lambda f: _ids(f.folders), filters={"workspaceId": gong.WORKSPACE}, limit=None,
                                      min_pages=1),
        },
        calls=[
            Call("users", "list", {}, _count(8), ("cursor", "total_records", "current_page_number"),
                 ("pagination",)),
            Call("calls", "list", {"fromDateTime": "2026-01-01T00:00:00Z"},
                 _holds(lambda r, f: all(not c["isPrivate"] for c in r) and len(r) == 7),
                 ("cursor", "total_records", "current_page_number"), ("pagination",)),
            Call("calls", "get", {"id": "7782342274025937005"}, _eq("title", "Discovery call 5")),
            Call("users", "get", {"id": "234599484848425"}, _eq("emailAddress", "rep2@example.com")),
        ],
        check_entity="users", missing=("users", {"id": "1"}, 404),
        write=Call("calls_extensive", "list", {"filter": {"callIds": ["7782342274025937003", "7782342274025937004"]},
                                               "contentSelector": {"exposedFields": {"parties": True}}},
                   _holds(lambda r, f: _ids(r, "metaData.id") == ["7782342274025937004"])),  # Gong has no writes
    ),
    Case(
        name="hubspot", make=lambda: hubspot.FakeHubSpot(), credentials={"private_app_token": hubspot.TOKEN},
        auth=lambda h: h == f"Bearer {hubspot.TOKEN}", auth_header="Authorization",
        streams={n: Stream(_table("objects", n)) for n in hubspot.TYPES},
        calls=[
            Call("contacts", "list", {"limit": 3, "properties": "email"}, _count(3, first="1000"),
                 ("next_cursor", "next_link")),
            Call("deals", "get", {"dealId": "3004", "properties": "dealname"}, _eq("properties.dealname", "Deal 4")),
            Call("contacts", "search", {"filterGroups": [{"filters": [
                {"propertyName": "email", "operator": "EQ", "value": "ada5@example.com"}]}]},
                 _count(1, first="1005"), ("total", "next_cursor", "next_link")),
        ],
        check_entity="contacts", missing=("companies", {"companyId": "1"}, 404),
        write=Call("notes", "create", {"properties": {"hs_note_body": "Called back"}},
                   _check_body({"properties": {"hs_note_body": "Called back"}}, "POST")),
    ),
    Case(
        name="shopify", make=lambda: shopify.FakeShopify(), credentials={"access_token": shopify.TOKEN},
        config={"shop": "acme"}, base_path=shopify.BASE_PATH,
        auth=lambda h: h == shopify.TOKEN, auth_header="X-Shopify-Access-Token",
        streams={
            "customers": Stream(lambda f: _ids(f.customers)),
            "orders": Stream(lambda f: _ids(f.orders)),  # status=any by default, not only open ones
            "products": Stream(lambda f: _ids(f.products)),
            "locations": Stream(lambda f: _ids(f.locations), limit=None, min_pages=1),
        },
        calls=[
            Call("customers", "list", {"limit": 3}, _count(3, first=207119551), ("next_page_url",)),
            Call("customers", "get", {"customer_id": 207119553}, _eq("email", "bob2@example.com")),
            Call("customers", "search", {"query": "email:bob4@example.com"}, _count(1, first=207119555),
                 ("next_page_url",)),
            Call("product_variants", "list", {"product_id": 632910392, "limit": 250}, _count(23), ("next_page_url",)),
            Call("shop", "get", {}, _eq("name", "Apple Computers")),
        ],
        check_entity="customers", missing=("orders", {"order_id": 1}, 404),
        write=Call("customers", "create", {"input": {"email": "new@example.com", "firstName": "Ada"}},
                   _eq("customer.email", "new@example.com")),
        retry_after=("2.0", "2"),
    ),
    Case(
        name="salesforce", make=lambda: salesforce.FakeSalesforce(page_size=8),
        credentials={"client_id": salesforce.CLIENT_ID, "client_secret": salesforce.CLIENT_SECRET,
                     "refresh_token": salesforce.REFRESH_TOKEN},
        config={"instance_url": "https://127.0.0.1"}, base_path=salesforce.API,
        auth=lambda h: h.startswith("Bearer 00Dfake!"), auth_header="Authorization",
        streams={
            **{n: Stream(_table("records", o, "Id"), key="Id", limit=None)
               for n, o in (("accounts", "Account"), ("contacts", "Contact"), ("leads", "Lead"),
                            ("opportunities", "Opportunity"), ("cases", "Case"))},
            "sobjects": Stream(lambda f: list(salesforce.PREFIX), key="name", limit=None, min_pages=1),
            "query": Stream(lambda f: _ids(f.records["Lead"], "Id"), key="Id", limit=None,
                            filters={"q": "SELECT Id, Name FROM Lead"}),
        },
        calls=[
            Call("accounts", "list", {"limit": 1}, _count(8, "Id", "001000000000000AAA"), ("done", "nextRecordsUrl")),
            Call("query", "list", {"q": "SELECT Id FROM Contact WHERE Name = 'Jane Doe3'"},
                 _count(1, "Id", "003000000000003AAA"), ("done", "nextRecordsUrl")),
            Call("opportunities", "get", {"id": "006000000000002AAA"}, _eq("Name", "Deal 2")),
            Call("accounts", "search", {"q": "FIND {Acme 1} IN NAME FIELDS RETURNING Account(Id, Name)"},
                 _holds(lambda r, f: len(r["searchRecords"]) == 11)),
        ],
        check_entity="sobjects", missing=("leads", {"id": "00Q000000000999AAA"}, 404),
        write=Call("contacts", "create", {"LastName": "Hopper", "Email": "grace@example.com"},
                   _eq("success", True)),
    ),
    Case(
        name="zendesk-support", make=lambda: zendesk.FakeZendesk(),
        credentials={"email": zendesk.EMAIL, "api_token": zendesk.API_TOKEN}, config={"subdomain": "acme"},
        base_path="/api/v2", auth=lambda h: h == _basic(f"{zendesk.EMAIL}/token", zendesk.API_TOKEN),
        auth_header="Authorization",
        streams={n: Stream(_table("tables", n))
                 for n in ("tickets", "users", "organizations", "groups", "ticket_fields")},
        calls=[
            Call("tickets", "list", {"per_page": 3, "page": 2}, _count(3, first=35439),
                 ("next_page", "previous_page", "count")),
            Call("users", "list", {"role": "agent", "limit": 100}, _count(8), ("next_page", "previous_page", "count")),
            Call("tickets", "get", {"ticket_id": 35437}, _eq("subject", "Help 1")),
            Call("ticket_comments", "list", {"ticket_id": 35436, "per_page": 5}, _count(5, first=1274),
                 ("next_page", "previous_page", "count")),
            Call("tickets", "search", {"query": "type:ticket status:new"}, _count(12, "result_type", "ticket"),
                 ("next_page", "previous_page", "count")),
        ],
        check_entity="tickets", missing=("groups", {"group_id": 1}, 404),
        write=Call("ticket_comments", "create", {"ticket_id": 35436, "body": "On it", "public": False},
                   _check_zendesk_comment),
    ),
    Case(
        name="jira", make=lambda: jira.FakeJira(), credentials={"username": jira.USERNAME, "password": jira.API_TOKEN},
        config={"subdomain": "acme"}, auth=lambda h: h == _basic(jira.USERNAME, jira.API_TOKEN),
        auth_header="Authorization",
        streams={
            "issues": Stream(lambda f: _ids(f.issues, "key"), key="key", filters={"jql": "project = PROJ"}),
            "projects": Stream(lambda f: _ids(f.projects, "key"), key="key"),
            "users": Stream(lambda f: _ids(f.users, "accountId"), key="accountId"),
            "issue_fields": Stream(lambda f: _ids(f.fields), limit=None, min_pages=1),
        },
        calls=[
            Call("issues", "search", {"jql": "project = PROJ AND status = Done", "maxResults": 3},
                 _count(3, "fields.summary", "Task 1"), ("nextPageToken", "isLast", "total")),
            Call("projects", "search", {"query": "project 1", "maxResults": 5}, _count(5, "key", "P01"),
                 ("nextPage", "total")),
            Call("issues", "get", {"issueIdOrKey": "PROJ-3"}, _eq("fields.summary", "Task 3")),
            Call("users", "search", {"query": "person 5"}, _count(1, "accountId", "5b10a2844c20165700ede005")),
            Call("issue_comments", "list", {"issueIdOrKey": "PROJ-1", "maxResults": 10, "startAt": 10},
                 _count(10, first="10010"), ("next_offset", "max_results", "total", "startAt", "maxResults")),
            Call("issue_comments", "get", {"issueIdOrKey": "PROJ-1", "commentId": "10003"}, _eq("id", "10003")),
            Call("issue_worklogs", "get", {"issueIdOrKey": "PROJ-1", "worklogId": "100030"}, _eq("timeSpent", "1h")),
            Call("issue_fields", "search", {"type": ["custom"], "id": ["customfield_10001", "customfield_10002"]},
                 _holds(lambda r, f: "type=custom&id=customfield_10001&id=customfield_10002"
                        in f.requests[-1].raw_path)),
            Call("issue_transitions", "list", {"issueIdOrKey": "PROJ-1"}, _count(2, first="11")),
        ],
        check_entity="users", missing=("issues", {"issueIdOrKey": "NOPE-1"}, 404),
        write=Call("issues", "create", {"fields": {"project": {"key": "PROJ"}, "summary": "Renew cert",
                                                   "issuetype": {"name": "Task"}}}, _eq("key", "PROJ-24")),
    ),
]
IDS = [c.name for c in CASES]


def test_every_catalog_api_connector_has_a_case() -> None:
    shipped = {s.name for s in load_catalog().values() if s.is_catalog_api and s.entities}
    assert shipped == set(IDS)


@pytest.fixture(params=CASES, ids=IDS)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(case: Case) -> Iterator[Any]:
    with case.make() as api:
        yield api


@dataclass
class Env:
    src: dict[str, Any]
    auth: dict[str, str]
    exec_url: str
    query_url: str
    admin: Admin

    def run(self, entity: str, action: str, params: dict[str, Any] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"entity": entity, "action": action}
        if params is not None:
            body["params"] = params
        return httpx.post(self.exec_url, json=body, headers=self.auth, timeout=20)

    def query(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.query_url, json=body, headers=self.auth, timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeyrelayServer, Admin]]:
    """One keyrelay for the module (as the `kr` fixture, but started once): every test gets its own workspace,
    source and fake, so nothing is shared but the process."""
    with KeyrelayServer(make_settings(data_dir=tmp_path_factory.mktemp("catalog") / "data")) as kr:
        admin = Admin(kr.url)
        yield kr, admin
        admin.close()


@pytest.fixture
def env(server: tuple[KeyrelayServer, Admin], case: Case, fake: FakeApi) -> Env:
    kr, admin = server
    ws = admin.workspace(f"ws-{uuid.uuid4().hex[:12]}")
    config = {"base_url": fake.url + case.base_path, **case.config}
    if case.name == "salesforce":
        config["login_url"] = fake.url
    src = admin.source(ws, upstream_url="", connector=case.name, slug=case.name.replace("-", "_"), config=config,
                       credentials=case.credentials)
    key = admin.api_key(ws, ["execute", "query"])
    return Env(src=src, auth={"Authorization": f"Bearer {key}"}, admin=admin,
               exec_url=f"{kr.url}/api/v1/connectors/instances/{src['id']}/execute",
               query_url=f"{kr.url}/v1/proxy/sources/{src['id']}/query")


def test_every_stream_walks_to_the_end(case: Case, env: Env, fake: Any) -> None:
    listed = env.admin.get(f"/api/v1/sources/{env.src['id']}/streams").json()["data"]
    assert {s["name"] for s in listed} == set(case.streams)
    for name, stream in case.streams.items():
        filters = dict(stream.filters)
        if stream.limit is not None:
            filters["limit"] = stream.limit
        seen: list[Any] = []
        token, pages = None, 0
        while True:
            body: dict[str, Any] = {"stream": name, "filters": filters}
            if token:
                body["page_token"] = token
            r = env.query(body)
            assert r.status_code == 200, (name, r.text)
            out = r.json()
            seen += _ids(out["records"], stream.key)
            pages += 1
            token = out["next_page_token"]
            if token is None or pages > 20:
                break
        assert seen == stream.expected(fake), name
        assert pages >= stream.min_pages, (name, pages)


def test_execute_list_get_search_check_and_write(case: Case, env: Env, fake: Any) -> None:
    for call in case.calls:
        r = env.run(call.entity, call.action, call.params)
        assert r.status_code == 200, (call.entity, call.action, r.text)
        out = r.json()
        call.check(out["result"], fake)
        meta = out["connector_metadata"]
        missing = [k for k in call.meta + call.nested if k not in meta]
        assert not missing, (call.entity, call.action, meta)
        assert all(not isinstance(v, dict | list) for k, v in meta.items() if k not in call.nested), meta  # flat
        assert all(isinstance(meta[k], dict) for k in call.nested), meta
    # Airbyte's check(): the check entity's list with {"limit": 1}
    r = env.run(case.check_entity, "list", {"limit": 1})
    assert r.status_code == 200 and isinstance(r.json()["result"], list), r.text
    # writes are refused until the policy allows them
    write = case.write
    r = env.run(write.entity, write.action, write.params)
    if write.action == "list":
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403, r.text
        env.admin.http.patch(f"/api/v1/sources/{env.src['id']}", json={"policy": {"allow_writes": True}},
                             headers=env.admin.headers)
        r = env.run(write.entity, write.action, write.params)
        assert r.status_code == 200, r.text
    write.check(r.json()["result"], fake)


def test_auth_errors_and_rate_limits(case: Case, env: Env, fake: Any) -> None:
    r = env.run(case.check_entity, "list", {"limit": 1})
    assert r.status_code == 200, r.text
    sent = fake.requests[-1].headers.get(case.auth_header, "")
    assert case.auth(sent), sent
    for value in case.credentials.values():
        assert value not in r.text
    entity, params, status = case.missing
    r = env.run(entity, "get", params)
    assert r.status_code == status, r.text
    upstream_retry, ours = case.retry_after
    fake.fail_next.append((429, {"Retry-After": upstream_retry}, {"message": "Too many requests"}))
    r = env.run(case.check_entity, "list", {"limit": 1})
    assert r.status_code == 429 and r.headers["retry-after"] == ours, r.text
    fake.fail_next.append((401, {}, {"message": "Bad credentials"}))
    r = env.run(case.check_entity, "list", {"limit": 1})
    if case.name == "salesforce":  # OAuth2: a rejected access token is refreshed and the request retried once
        assert r.status_code == 200 and fake.tokens_issued == 2, r.text
    else:
        assert r.status_code == 403 and r.json()["error"]["code"] == "upstream_rejected", r.text
    r = env.run("nope", "list", {})
    assert r.status_code == 422 and r.json()["error"]["field"] == "entity"
    message = r.json()["error"]["message"]
    assert all(name in message for name in load_catalog()[case.name].entities), message

"""Airbyte's per-connector client packages (`airbyte-agent-<name>`, test-only dependencies, Elastic License 2.0)
in hosted mode against a live keyrelay, whose sources point at fake upstream APIs on 127.0.0.1.

The packages take Airbyte's base URLs from class attributes of their own `AirbyteCloudClient` (`AUTH_BASE_URL`
for the token, `API_BASE_URL` for the instance lookup and execute); each test points both at keyrelay, as
docs/airbyte.md tells users to. They call `POST /api/v1/applications/token`,
`GET /api/v1/connectors/instances_for_user` and `POST /api/v1/connectors/instances/{id}/execute`, and hold only
keyrelay client credentials.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.fakes import github, gong, hubspot, jira, salesforce, stripe, zendesk
from support.keyrelay import Admin, KeyrelayServer, make_settings

# the client credentials of the Gong example in docs/airbyte.md, made keyrelay's bootstrap application here
CLIENT_ID, CLIENT_SECRET = "your_airbyte_client_id", "your_airbyte_client_secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyrelayServer]:
    settings = make_settings(data_dir=tmp_path_factory.mktemp("kr") / "data", admin_client_id=CLIENT_ID,
                             admin_client_secret=CLIENT_SECRET)
    with KeyrelayServer(settings) as kr:
        yield kr


@pytest.fixture(scope="module")
def admin(server: KeyrelayServer) -> Iterator[Admin]:
    client = Admin(server.url, CLIENT_ID, CLIENT_SECRET)
    yield client
    client.close()


Point = Callable[[str], None]


@pytest.fixture
def point(server: KeyrelayServer, monkeypatch: pytest.MonkeyPatch) -> Point:
    """Point a package's `AirbyteCloudClient` at keyrelay (the documented two class attributes)."""
    monkeypatch.setenv("AIRBYTE_TELEMETRY_MODE", "disabled")

    def to_keyrelay(package: str) -> None:
        cloud = importlib.import_module(f"{package}._vendored.connector_sdk.cloud_utils").AirbyteCloudClient
        monkeypatch.setattr(cloud, "AUTH_BASE_URL", server.url)
        monkeypatch.setattr(cloud, "API_BASE_URL", server.url)

    return to_keyrelay


def customer(admin: Admin, connector: str, config: dict[str, Any], credentials: dict[str, Any],
             name: str | None = None) -> str:
    """A workspace (its name is the packages' `external_user_id`) holding one source of `connector`."""
    name = name or f"customer-{uuid.uuid4().hex[:10]}"
    ws = admin.workspace(name)
    admin.source(ws, upstream_url="", connector=connector, slug=connector.replace("-", "_"), config=config,
                 credentials=credentials)
    return name


def hosted(cls: Any, user: str, secret: str = CLIENT_SECRET) -> Any:
    return cls(external_user_id=user, airbyte_client_id=CLIENT_ID, airbyte_client_secret=secret)


# --- Gong: the hosted-mode example of docs/airbyte.md ------------------------------------------------------------


def guide_example() -> Callable[[], Coroutine[Any, Any, None]]:
    """`main` of the Gong example in docs/airbyte.md (Airbyte's hosted-mode guide, with the package's current import
    name), taken from the document itself so that what users read is what runs here."""
    text = (Path(__file__).parents[2] / "docs" / "airbyte.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    code = next(b for b in blocks if 'external_user_id="customer-workspace-123"' in b)
    namespace: dict[str, Any] = {"__name__": "docs_airbyte_example"}  # not __main__: no asyncio.run()
    exec(compile(code, "docs/airbyte.md", "exec"), namespace)
    main: Callable[[], Coroutine[Any, Any, None]] = namespace["main"]
    return main


async def test_the_gong_guide_example_runs_as_written(admin: Admin, point: Point,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with gong.FakeGong(page_size=10, year=2025) as fake:
        customer(admin, "gong", {"base_url": fake.url},
                 {"access_key": gong.ACCESS_KEY, "access_key_secret": gong.ACCESS_SECRET}, "customer-workspace-123")
        point("airbyte_agent_gong")
        await guide_example()()
        out = capsys.readouterr().out
        assert "Connector: gong v" in out
        assert "Found 10 users:" in out and "  - Rep0 Seller\n    Email: rep0@example.com\n    Active: True" in out
        assert "Total records: 23" in out
        first_page = [c for c in fake.calls if c["started"] < "2025-01-14"][:10]  # Gong's page, private ones dropped
        assert f"Found {sum(not c['isPrivate'] for c in first_page)} calls" in out
        sent = fake.requests[-1]
        assert sent.raw_path == "/v2/calls?fromDateTime=2025-01-01T00%3A00%3A00Z&toDateTime=2025-01-14T00%3A00%3A00Z"
        assert sent.headers["User-Agent"] == "keyrelay"


async def test_gong_pages_by_the_returned_cursor_and_gets_one(admin: Admin, point: Point) -> None:
    from airbyte_agent_gong import GongConnector

    with gong.FakeGong(page_size=10) as fake:
        user = customer(admin, "gong", {"base_url": fake.url},
                        {"access_key": gong.ACCESS_KEY, "access_key_secret": gong.ACCESS_SECRET})
        point("airbyte_agent_gong")
        conn = hosted(GongConnector, user)
        page = await conn.users.list()
        ids = [u.id for u in page.data]
        while page.meta.pagination.cursor:
            assert page.meta.pagination.total_records == len(fake.users)
            page = await conn.users.list(cursor=page.meta.pagination.cursor)
            ids += [u.id for u in page.data]
        assert ids == [u["id"] for u in fake.users]
        one = await conn.users.get(id=ids[4])
        assert one.data.email_address == "rep4@example.com" and one.data.first_name == "Rep4"
        call = await conn.calls.get(id=fake.calls[5]["id"])
        assert call.data.title == "Discovery call 5"
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await hosted(GongConnector, user, secret="not-the-secret-0123456789").users.list()
        assert refused.value.response.status_code == 401


# --- Stripe, GitHub, HubSpot ---------------------------------------------------------------------------------------


async def test_stripe_lists_pages_and_gets(admin: Admin, point: Point) -> None:
    from airbyte_agent_stripe import StripeConnector

    with stripe.FakeStripe() as fake:
        user = customer(admin, "stripe", {"base_url": fake.url}, {"api_key": stripe.API_KEY})
        point("airbyte_agent_stripe")
        conn = hosted(StripeConnector, user)
        page = await conn.customers.list(limit=10)
        ids = [c.id for c in page.data]
        while page.meta.has_more:
            page = await conn.customers.list(limit=10, starting_after=page.data[-1].id)
            ids += [c.id for c in page.data]
        assert ids == [f"cus_{i:04d}" for i in range(25)]
        got = await conn.customers.get(id="cus_0003")  # a get without extractors: the object as it came
        assert got["id"] == "cus_0003" and got["email"] == "user3@example.com"
        invoices = await conn.invoices.list(limit=2)
        assert [i.id for i in invoices.data] == ["in_0000", "in_0001"]
        assert all(r.headers["Authorization"] == f"Bearer {stripe.API_KEY}" for r in fake.requests)


async def test_github_lists_pages_and_gets_with_githubs_headers(admin: Admin, point: Point) -> None:
    from airbyte_agent_github import GithubConnector

    with github.FakeGitHub() as fake:
        user = customer(admin, "github", {"base_url": fake.url}, {"token": github.TOKEN})
        point("airbyte_agent_github")
        conn = hosted(GithubConnector, user)
        first = await conn.repositories.list(username=github.OWNER, per_page=10)
        assert [r["name"] for r in first.data] == [r["name"] for r in fake.repos[:10]]
        # the typed result carries no metadata in this package: page with execute(), which keeps it
        page = await conn.execute("repositories", "list", {"username": github.OWNER, "per_page": 10})
        names = [r["name"] for r in page.data]
        while page.meta["has_next_page"]:
            page = await conn.execute("repositories", "list", {"username": github.OWNER, "per_page": 10,
                                                               "after": page.meta["end_cursor"]})
            names += [r["name"] for r in page.data]
        assert names == [r["name"] for r in fake.repos]
        repo = await conn.repositories.get(owner=github.OWNER, repo=github.REPO)
        assert repo.data["nameWithOwner"] == f"{github.OWNER}/{github.REPO}"
        issues = await conn.issues.list(owner=github.OWNER, repo=github.REPO, per_page=5)
        assert [i["number"] for i in issues.data] == [1, 2, 3, 4, 5]
        sent = [{k.lower(): v for k, v in r.headers.items()} for r in fake.requests]
        assert all(h["user-agent"] == "keyrelay" and h["x-github-api-version"] == "2022-11-28" for h in sent)


async def test_hubspot_lists_pages_and_gets(admin: Admin, point: Point) -> None:
    from airbyte_agent_hubspot import HubspotConnector

    with hubspot.FakeHubSpot() as fake:
        user = customer(admin, "hubspot", {"base_url": fake.url}, {"private_app_token": hubspot.TOKEN})
        point("airbyte_agent_hubspot")
        conn = hosted(HubspotConnector, user)
        page = await conn.contacts.list(limit=10)
        ids = [c.id for c in page.data]
        while page.meta.next_cursor:
            page = await conn.contacts.list(limit=10, after=page.meta.next_cursor)
            ids += [c.id for c in page.data]
        assert ids == [c["id"] for c in fake.objects["contacts"]]
        one = await conn.contacts.get(contact_id=ids[2])  # a get without extractors: the object as it came
        assert one["id"] == ids[2] and one["properties"]["email"] == fake.objects["contacts"][2]["properties"]["email"]


# --- Salesforce, Zendesk Support, Jira ------------------------------------------------------------------------------


async def test_salesforce_lists_and_gets(admin: Admin, point: Point) -> None:
    from airbyte_agent_salesforce import SalesforceConnector

    with salesforce.FakeSalesforce() as fake:
        user = customer(admin, "salesforce", {"base_url": fake.url + salesforce.API, "login_url": fake.url,
                                              "instance_url": "https://127.0.0.1"},
                        {"client_id": salesforce.CLIENT_ID, "client_secret": salesforce.CLIENT_SECRET,
                         "refresh_token": salesforce.REFRESH_TOKEN})
        point("airbyte_agent_salesforce")
        conn = hosted(SalesforceConnector, user)
        # this package types list as the SOQL envelope but hands `result` back as is: keyrelay's record array
        records = await conn.accounts.list(q="SELECT Id, Name FROM Account")
        assert [r["Id"] for r in records] == [r["Id"] for r in fake.records["Account"]]
        one = await conn.accounts.get(id=records[1]["Id"])
        assert one["Id"] == records[1]["Id"] and one["Name"] == fake.records["Account"][1]["Name"]


async def test_zendesk_lists_pages_and_gets(admin: Admin, point: Point) -> None:
    from airbyte_agent_zendesk_support import ZendeskSupportConnector

    with zendesk.FakeZendesk() as fake:
        user = customer(admin, "zendesk-support", {"base_url": fake.url + "/api/v2", "subdomain": "acme"},
                        {"email": zendesk.EMAIL, "api_token": zendesk.API_TOKEN})
        point("airbyte_agent_zendesk_support")
        conn = hosted(ZendeskSupportConnector, user)
        page = await conn.tickets.list()
        assert page.meta.count == len(fake.tables["tickets"])
        ids = [t.id for t in page.data]
        number = 1
        while page.meta.next_page:
            number += 1
            page = await conn.tickets.list(page=number)
            ids += [t.id for t in page.data]
        assert ids == [t["id"] for t in fake.tables["tickets"]]
        one = await conn.tickets.get(ticket_id=str(ids[1]))
        assert one.data.id == ids[1]


async def test_jira_searches_pages_and_gets_comments_and_worklogs(admin: Admin, point: Point) -> None:
    from airbyte_agent_jira import JiraConnector

    with jira.FakeJira() as fake:
        user = customer(admin, "jira", {"base_url": fake.url, "subdomain": "acme"},
                        {"username": jira.USERNAME, "password": jira.API_TOKEN})
        point("airbyte_agent_jira")
        conn = hosted(JiraConnector, user)
        page = await conn.issues.search(jql="project = PROJ", max_results=10, fields="summary")
        keys = [i.key for i in page.data]
        while page.meta.next_page_token:
            page = await conn.issues.search(jql="project = PROJ", max_results=10, fields="summary",
                                            next_page_token=page.meta.next_page_token)
            keys += [i.key for i in page.data]
        assert keys == [i["key"] for i in fake.issues]
        comments = await conn.issue_comments.list(issue_id_or_key="PROJ-1", start_at=5, max_results=5)
        assert [c.id for c in comments.data] == [c["id"] for c in fake.comments[5:10]]
        assert comments.meta.start_at == 5 and comments.meta.total == len(fake.comments)
        comment = await conn.issue_comments.get(issue_id_or_key="PROJ-1", comment_id=fake.comments[3]["id"])
        assert comment["id"] == fake.comments[3]["id"]
        worklog = await conn.issue_worklogs.get(issue_id_or_key="PROJ-1", worklog_id=fake.worklogs[2]["id"])
        assert worklog["id"] == fake.worklogs[2]["id"] and worklog["timeSpent"] == "1h"
        with pytest.raises(httpx.HTTPStatusError) as missing:
            await conn.issue_comments.get(issue_id_or_key="PROJ-1", comment_id="999")
        assert missing.value.response.status_code == 404

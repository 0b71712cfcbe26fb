"""The REAL `airbyte-agent-sdk` (test-only dependency, Elastic License 2.0) in hosted mode against a live keyrelay.

`SDK_DEV_ADP_API_HOST` points the SDK at keyrelay; keyrelay's sources point at fake upstream APIs on 127.0.0.1.
The SDK holds only keyrelay client credentials (docs/airbyte.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from airbyte_agent_sdk import (
    AirbyteAuthConfig,
    AuthenticationError,
    ConnectorNotFoundError,
    ConnectorValidationError,
    RateLimitError,
    connect,
)
from airbyte_agent_sdk.connectors.stripe import StripeConnector

from keyrelay.connectors.spec import load_catalog
from support.fakes.stripe import API_KEY, FakeStripe
from support.keyrelay import ADMIN_ID, ADMIN_SECRET, Admin, KeyrelayServer, make_settings

CREDS = {"client_id": ADMIN_ID, "client_secret": ADMIN_SECRET}


def hosted_stripe(workspace: str = "acme", secret: str = ADMIN_SECRET) -> StripeConnector:
    """The typed connector in hosted mode, found (lazily, on first use) by workspace name + definition id.

    Same wire path as `connect()`, which additionally parses the SDK's bundled spec (~7 s): only the first test
    uses `connect()` itself.
    """
    return StripeConnector(auth_config=AirbyteAuthConfig(workspace_name=workspace, airbyte_client_id=ADMIN_ID,
                                                         airbyte_client_secret=secret))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyrelayServer]:
    """One keyrelay for the module (each test uses its own sources or leaves them as it found them)."""
    with KeyrelayServer(make_settings(data_dir=tmp_path_factory.mktemp("kr") / "data")) as kr:
        yield kr


@pytest.fixture(scope="module")
def admin_client(server: KeyrelayServer) -> Iterator[Admin]:
    client = Admin(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def acme(admin_client: Admin) -> str:
    return admin_client.workspace("acme")


@pytest.fixture
def hosted(server: KeyrelayServer, monkeypatch: pytest.MonkeyPatch) -> KeyrelayServer:
    monkeypatch.setenv("SDK_DEV_ADP_API_HOST", server.url)
    monkeypatch.setenv("AIRBYTE_TELEMETRY_MODE", "disabled")  # no calls to Airbyte's telemetry or ipify
    for name in ("AIRBYTE_CLIENT_ID", "AIRBYTE_CLIENT_SECRET", "AIRBYTE_ORGANIZATION_ID",
                 "SECRETS_CONFIGURED_FROM_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    return server


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def stripe(stripe_fake: FakeStripe) -> FakeStripe:
    stripe_fake.requests.clear()
    stripe_fake.fail_next.clear()
    return stripe_fake


@pytest.fixture(scope="module")
def stripe_module_source(admin_client: Admin, acme: str, stripe_fake: FakeStripe) -> dict[str, Any]:
    return admin_client.source(acme, upstream_url="", connector="stripe", slug="stripe",
                               config={"base_url": stripe_fake.url}, credentials={"api_key": API_KEY})


@pytest.fixture
def stripe_source(hosted: KeyrelayServer, stripe_module_source: dict[str, Any]) -> dict[str, Any]:
    return stripe_module_source


async def test_stripe_typed_list_get_paging_and_check(stripe_source: dict[str, Any], stripe: FakeStripe) -> None:
    async with connect("stripe", workspace_name="acme", **CREDS) as conn:
        assert isinstance(conn, StripeConnector)
        page = await conn.customers.list(limit=10)
        assert [c.id for c in page.data] == [f"cus_{i:04d}" for i in range(10)]
        assert page.meta is not None and page.meta.has_more is True
        ids = [c.id for c in page.data]
        while page.meta is not None and page.meta.has_more:
            page = await conn.customers.list(limit=10, starting_after=page.data[-1].id)
            ids += [c.id for c in page.data]
        assert ids == [f"cus_{i:04d}" for i in range(25)]

        got = await conn.customers.get(id="cus_0003")
        assert got["id"] == "cus_0003" and got["email"] == "user3@example.com"
        invoices = await conn.invoices.list(limit=2)
        assert [i.id for i in invoices.data] == ["in_0000", "in_0001"]

        health = await conn.check()
        assert health.status == "healthy", health.error
    assert all(r.headers["Authorization"] == f"Bearer {API_KEY}" for r in stripe.requests)


async def test_explicit_connector_id_and_generic_execute(stripe_source: dict[str, Any]) -> None:
    auth = AirbyteAuthConfig(airbyte_client_id=ADMIN_ID, airbyte_client_secret=ADMIN_SECRET,
                             connector_id=stripe_source["id"])
    async with StripeConnector(auth_config=auth) as conn:
        out = await conn.execute("customers", "list", {"limit": 2}, select_fields=["id"])
        assert out.data == [{"id": "cus_0000"}, {"id": "cus_0001"}]
        found = await conn.execute("customers", "api_search", {"query": "email:'user5@example.com'"})
        assert [c["id"] for c in found] == ["cus_0005"]  # the SDK hands back `result` as is for api_search


async def test_lookup_is_by_workspace_name(stripe_source: dict[str, Any]) -> None:
    async with hosted_stripe("someone-else") as conn:
        with pytest.raises(ConnectorNotFoundError):
            await conn.customers.list(limit=1)


async def test_wrong_client_credentials_raise_authentication_error(stripe_source: dict[str, Any]) -> None:
    async with hosted_stripe(secret="wrong-secret-0123456789") as conn:
        with pytest.raises(AuthenticationError):
            await conn.customers.list(limit=1)


async def test_upstream_rate_limit_and_unknown_entity(stripe_source: dict[str, Any], stripe: FakeStripe) -> None:
    async with hosted_stripe() as conn:
        # a Retry-After beyond keyrelay's own retry budget reaches the agent
        stripe.fail_next.append((429, {"Retry-After": "120"}, {"error": {"message": "Too many requests"}}))
        with pytest.raises(RateLimitError) as limited:
            await conn.customers.list(limit=1)
        assert limited.value.retry_after == 120
        with pytest.raises(ConnectorValidationError) as invalid:
            await conn.execute("not_an_entity", "list", {})
        assert "customers" in str(invalid.value)
        stripe.fail_next.append((401, {}, {"error": {"message": "Invalid API Key provided"}}))
        with pytest.raises(AuthenticationError):  # the stored credential was refused upstream (403)
            await conn.customers.get(id="cus_0001")


async def test_inspect_and_skill_docs_come_from_our_definitions(stripe_source: dict[str, Any]) -> None:
    async with hosted_stripe() as conn:
        info = await conn.inspect_connector()
        assert info["docs_skill_id"] == "connector:stripe" and info["connector_id"] == stripe_source["id"]
        text = await conn.read_skill_docs()
        ours = load_catalog()["stripe"]
        assert ours.title in text and "customers" in text and "balance_transactions" in text
        section = await conn.read_skill_docs("entity:customers")
        for param in ours.entities["customers"].actions["list"].params.values():
            assert param.name in section and param.description.split(",")[0] in section



# --- GitHub (GraphQL reads) and Gong ------------------------------------------------------------------------------

def _hosted(cls: Any) -> Any:
    return cls(auth_config=AirbyteAuthConfig(workspace_name="acme", airbyte_client_id=ADMIN_ID,
                                             airbyte_client_secret=ADMIN_SECRET))


async def test_github_typed_list_get_paging_and_check(hosted: KeyrelayServer, admin_client: Admin, acme: str) -> None:
    from airbyte_agent_sdk.connectors.github import GithubConnector

    from support.fakes.github import OWNER, REPO, TOKEN, FakeGitHub

    with FakeGitHub() as github:
        admin_client.source(acme, upstream_url="", connector="github", slug="github", credentials={"token": TOKEN},
                            config={"base_url": github.url, "owner": OWNER, "repo": REPO})
        async with _hosted(GithubConnector) as conn:
            health = await conn.check()  # repositories.list with only {"limit": 1}: username from the config
            assert health.status == "healthy", health.error
            page = await conn.repositories.list(OWNER, per_page=10)
            assert page.meta is not None and page.meta.has_next_page is True and page.meta.end_cursor
            names = [r["name"] for r in page.data]
            while page.meta is not None and page.meta.has_next_page:
                page = await conn.repositories.list(OWNER, per_page=10, after=page.meta.end_cursor)
                names += [r["name"] for r in page.data]
            assert names == [r["name"] for r in github.repos]
            repo = await conn.repositories.get(owner=OWNER, repo=REPO)
            assert repo["nameWithOwner"] == f"{OWNER}/{REPO}"
            issues = await conn.issues.list(owner=OWNER, repo=REPO, per_page=5)
            assert [i["number"] for i in issues.data] == [1, 2, 3, 4, 5]
            docs = await conn.read_skill_docs("entity:repositories")
            assert "pass connector_metadata.end_cursor as the parameter after" in docs
        assert all(r.headers["Authorization"].endswith(TOKEN) for r in github.requests)


async def test_gong_typed_list_get_paging_and_privacy(hosted: KeyrelayServer, admin_client: Admin, acme: str) -> None:
    from airbyte_agent_sdk.connectors.gong import GongConnector

    from support.fakes.gong import ACCESS_KEY, ACCESS_SECRET, FakeGong

    with FakeGong(page_size=10) as gong:
        admin_client.source(acme, upstream_url="", connector="gong", slug="gong", config={"base_url": gong.url},
                            credentials={"access_key": ACCESS_KEY, "access_key_secret": ACCESS_SECRET})
        async with _hosted(GongConnector) as conn:
            health = await conn.check()  # users.list with {"limit": 1}, a param Gong's users.list lacks
            assert health.status == "healthy", health.error
            page = await conn.users.list()
            assert page.meta is not None and page.meta.total_records == len(gong.users) and page.meta.cursor
            ids = [u.id for u in page.data]
            while page.meta is not None and page.meta.cursor:
                page = await conn.users.list(cursor=page.meta.cursor)
                ids += [u.id for u in page.data]
            assert ids == [u["id"] for u in gong.users]
            user = await conn.users.get(id=ids[3])
            assert user["id"] == ids[3] and user["emailAddress"] == "rep3@example.com"
            calls = await conn.calls.list()
            # the first page of 10 calls, without the private ones
            assert [c.id for c in calls.data] == [c["id"] for c in gong.calls[:10] if not c["isPrivate"]]
            assert len(calls.data) < 10


async def test_jira_comment_and_worklog_gets_take_the_sdks_names(hosted: KeyrelayServer, admin_client: Admin,
                                                                  acme: str) -> None:
    """The SDK sends commentId / worklogId (docs/airbyte.md); the page metadata has both clients' offset keys."""
    from airbyte_agent_sdk.connectors.jira import JiraConnector

    from support.fakes.jira import API_TOKEN, USERNAME, FakeJira

    with FakeJira() as fake:
        admin_client.source(acme, upstream_url="", connector="jira", slug="jira", config={"base_url": fake.url,
                            "subdomain": "acme"}, credentials={"username": USERNAME, "password": API_TOKEN})
        async with _hosted(JiraConnector) as conn:
            comments = await conn.issue_comments.list(issue_id_or_key="PROJ-1", start_at=5, max_results=5)
            assert [c.id for c in comments.data] == [c["id"] for c in fake.comments[5:10]]
            assert comments.meta is not None and comments.meta.next_offset == 5
            comment = await conn.issue_comments.get(issue_id_or_key="PROJ-1", comment_id=fake.comments[3]["id"])
            assert comment["id"] == fake.comments[3]["id"]
            worklog = await conn.issue_worklogs.get(issue_id_or_key="PROJ-1", worklog_id=fake.worklogs[2]["id"])
            assert worklog["id"] == fake.worklogs[2]["id"]


# --- a limited application: the recommended setup (docs/airbyte.md) ---------------------------------------------

async def test_a_limited_application_works_for_its_workspace_only(stripe_source: dict[str, Any], stripe: FakeStripe,
                                                                  admin_client: Admin, hosted: KeyrelayServer) -> None:
    import httpx

    globex = admin_client.workspace("globex")
    theirs = admin_client.source(globex, upstream_url="", connector="stripe", slug="stripe",
                                 config={"base_url": stripe.url}, credentials={"api_key": API_KEY})
    made = admin_client.post("/api/v1/applications", {"name": "agent", "workspaces": ["acme"], "scopes": ["execute"]})
    assert made.status_code == 201, made.text
    cid, secret = made.json()["client_id"], made.json()["client_secret"]

    def limited(workspace: str) -> StripeConnector:
        return StripeConnector(auth_config=AirbyteAuthConfig(workspace_name=workspace, airbyte_client_id=cid,
                                                             airbyte_client_secret=secret))

    async with limited("acme") as conn:
        page = await conn.customers.list(limit=3)
        assert [c.id for c in page.data] == ["cus_0000", "cus_0001", "cus_0002"]
        assert (await conn.customers.get(id="cus_0002"))["id"] == "cus_0002"
        health = await conn.check()
        assert health.status == "healthy", health.error
    async with limited("globex") as conn:  # exists, with a Stripe source, but is not the application's
        with pytest.raises(ConnectorNotFoundError):
            await conn.customers.list(limit=1)

    token = httpx.post(hosted.url + "/api/v1/account/applications/token",
                       json={"client_id": cid, "client_secret": secret}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=hosted.url, headers=h, timeout=20) as http:
        assert http.get("/api/v1/integrations/connectors", params={"workspace_name": "globex"}).json() == {"data": []}
        assert http.get(f"/api/v1/integrations/connectors/{theirs['id']}").status_code == 404
        assert http.post(f"/api/v1/integrations/connectors/{theirs['id']}/execute",
                         json={"entity": "customers", "action": "list"}).status_code == 404
        writes = [
            http.delete(f"/api/v1/integrations/connectors/{stripe_source['id']}"),
            http.post("/v1/integrations/sources", json={"source_template_id": "stripe", "name": "x",
                                                        "workspace_id": stripe_source["workspace_id"],
                                                        "auth_config": {"api_key": "sk_test_x"}}),
            http.patch(f"/api/v1/sources/{stripe_source['id']}", json={"name": "renamed"}),
            http.post("/api/v1/workspaces", json={"name": "mine"}),
            http.post("/api/v1/api-keys", json={"workspace_id": stripe_source["workspace_id"], "scopes": ["execute"]}),
        ]
        assert [r.status_code for r in writes] == [403] * len(writes)
    assert admin_client.get(f"/api/v1/sources/{stripe_source['id']}").json()["name"] == stripe_source["name"]
    assert admin_client.http.delete(f"/api/v1/sources/{theirs['id']}", headers=admin_client.headers).status_code == 204

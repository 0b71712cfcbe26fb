"""Admin resources against a live keyrelay (workspaces, sources, API keys, catalog), and applications and connect
sessions against a scripted peer speaking the contract (their live tests are in test_round2_live.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from keyrelay_client import (
    Forbidden,
    LookupFailed,
    NotFound,
    Unauthenticated,
    UsageError,
    Workspace,
)
from keyrelay_client.admin import is_id
from support.keyrelay import KeyrelayServer
from support.scripted import Reply, ScriptedServer
from support.upstream import FakeUpstream

SECRET = "sk-upstream-secret-42"


def test_workspaces_by_name_or_id(client: Any) -> None:
    name = "acme-" + uuid.uuid4().hex[:8]
    ws = client.workspaces.create(name)
    assert isinstance(ws, Workspace) and ws.name == name and is_id(ws.id) and ws.created_at is not None
    assert client.workspaces.get(name) == ws
    assert client.workspaces.get(ws.id) == ws
    assert client.workspaces.get(ws) == ws
    assert [w.name for w in client.workspaces.list(name_contains=name)] == [name]
    client.workspaces.delete(name)
    with pytest.raises(NotFound):
        client.workspaces.get(ws.id)
    with pytest.raises(LookupFailed, match=name):
        client.workspaces.get(name)


def test_scoped_token_reaches_only_its_workspace(client: Any, connect: Any, server: KeyrelayServer) -> None:
    name = "scoped-" + uuid.uuid4().hex[:8]
    token = client.workspaces.scoped_token(name)  # creates the workspace
    assert token.token.startswith("krw_") and token.token not in repr(token) and token.expires_in == 1200
    assert client.workspaces.get(name).id == token.workspace_id
    agent = connect(server.url, token=token.token)
    assert agent.logs.list(workspace=token.workspace_id) == []  # its data scopes, in its workspace
    for admin_call in (agent.workspaces.list, lambda: agent.workspaces.get(token.workspace_id),
                       lambda: agent.workspaces.create("not-allowed-" + name)):
        with pytest.raises(Forbidden):  # no admin power, reads included
            admin_call()


def test_source_crud_never_shows_a_credential(client: Any, workspace: dict[str, str],
                                               upstream: FakeUpstream) -> None:
    src = client.sources.create(workspace["name"], "http", "Echo", slug="echo",
                                config={"upstream_url": upstream.url},
                                credentials={"bearer_token": SECRET}, policy={"allowed_methods": ["GET"]})
    assert (src.workspace_id, src.connector, src.slug, src.status) == (workspace["id"], "http", "echo", "active")
    assert src.credentials == ["bearer_token"] and src.policy["allowed_methods"] == ["GET"]
    assert SECRET not in repr(src) and SECRET not in repr(src.raw)
    assert client.sources.get(src.id) == src
    assert client.sources.get(src) == src
    assert [s.id for s in client.sources.list(workspace["name"])] == [src.id]
    changed = client.sources.update(src, name="Echo 2", policy={"allowed_methods": ["GET", "POST"]})
    assert changed.name == "Echo 2" and changed.policy["allowed_methods"] == ["GET", "POST"]
    client.sources.delete(src.id)
    with pytest.raises(NotFound):
        client.sources.get(src.id)


def test_update_without_changes_is_refused_before_sending(client: Any) -> None:
    with pytest.raises(UsageError, match="Nothing to change"):
        client.sources.update(str(uuid.uuid4()))


def test_streams_of_a_catalog_source(client: Any, workspace: dict[str, str]) -> None:
    src = client.sources.create(workspace["id"], "stripe", "Stripe", config={"base_url": "http://127.0.0.1:9"},
                                credentials={"api_key": "sk_test_1"})
    streams = {s["name"]: s for s in client.sources.streams(src)}
    assert "customers" in streams and "email" in {f["name"] for f in streams["customers"]["filters"]}


def test_api_keys_are_shown_once_and_revoked_at_once(client: Any, connect: Any, server: KeyrelayServer,
                                                     workspace: dict[str, str]) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    new = client.api_keys.create(workspace["name"], ["proxy", "logs"], name="agent", expires_at=expires)
    assert new.key.startswith("kr_") and new.key not in repr(new) and "key" not in new.raw
    assert (new.name, new.scopes, new.revoked, new.hint) == ("agent", ["logs", "proxy"], False, new.key[:7])
    assert new.expires_at is not None and abs((new.expires_at - expires).total_seconds()) < 1
    listed = client.api_keys.list(workspace["id"])
    assert [k.id for k in listed] == [new.id] and not hasattr(listed[0], "key")

    agent = connect(server.url, api_key=new.key)
    assert agent.logs.list() == []
    for admin_call in (agent.api_keys.list, agent.workspaces.list):
        with pytest.raises(Forbidden):  # API keys hold data scopes only
            admin_call()
    client.api_keys.delete(new.id)
    with pytest.raises(Unauthenticated):
        agent.logs.list()
    assert client.api_keys.list(workspace["id"])[0].revoked is True


def test_a_naive_expiry_is_refused_before_sending(client: Any, workspace: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="time zone"):
        client.api_keys.create(workspace["id"], ["proxy"], expires_at=dt.datetime(2030, 1, 1))


def test_connector_catalog_and_entities(client: Any) -> None:
    catalog = {c.name: c for c in client.connectors.list()}
    assert catalog["http"].config_schema["required"] == ["upstream_url"]
    assert catalog["stripe"].kind == "api"
    customers = next(e for e in client.connectors.entities("stripe") if e["name"] == "customers")
    assert {a["name"] for a in customers["actions"]} >= {"list", "get", "search"}
    with pytest.raises(NotFound):
        client.connectors.entities("no-such-connector")


# --- applications and connect sessions: the contract, against a scripted peer ---------------------------------


def scripted_admin(connect: Any, scripted: ScriptedServer) -> Any:
    return connect(scripted.url, token="kra_scripted_admin_token")


def test_applications_follow_the_contract(connect: Any, scripted: ScriptedServer) -> None:
    created = {"id": "app-1", "client_id": "kr_app_abc", "client_secret": "krs_shown_once", "name": "agent-app",
               "workspaces": ["acme"], "scopes": ["proxy"]}
    scripted.on("POST", "/api/v1/applications", Reply(201, created))
    scripted.on("GET", "/api/v1/applications", Reply(200, {"data": [
        {"id": "app-1", "client_id": "kr_app_abc", "name": "agent-app", "workspaces": ["acme"], "scopes": ["proxy"],
         "created_at": "2030-01-01T00:00:00Z"},
        {"id": "app-0", "client_id": "kr_app_boot", "name": "bootstrap admin", "workspaces": "*", "scopes": []}]}))
    scripted.on("POST", "/api/v1/applications/app-1/rotate-secret",
                Reply(200, {"id": "app-1", "client_id": "kr_app_abc", "client_secret": "krs_rotated"}))
    scripted.on("DELETE", "/api/v1/applications/app-1", Reply(204))
    scripted.on("PATCH", "/api/v1/applications/app-1", Reply(200, {
        "id": "app-1", "client_id": "kr_app_abc", "name": "agent-app", "workspaces": "*", "scopes": ["logs"],
        "revoked": False, "revoked_at": None}))
    kr = scripted_admin(connect, scripted)

    app = kr.applications.create("agent-app", workspaces=["acme"], scopes=["proxy"])
    assert (app.id, app.client_id, app.client_secret) == ("app-1", "kr_app_abc", "krs_shown_once")
    assert "krs_shown_once" not in repr(app) and "client_secret" not in app.raw
    assert scripted.seen("POST", "/api/v1/applications")[0].json() == {
        "name": "agent-app", "workspaces": ["acme"], "scopes": ["proxy"]}
    kr.applications.create("all", scopes=["logs"])
    assert scripted.seen("POST", "/api/v1/applications")[1].json()["workspaces"] == "*"

    listed = kr.applications.list()
    assert [(a.id, a.workspaces) for a in listed] == [("app-1", ["acme"]), ("app-0", "*")]
    assert listed[0].created_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    rotated = kr.applications.rotate_secret("app-1")
    assert rotated.client_secret == "krs_rotated" and "krs_rotated" not in repr(rotated)
    updated = kr.applications.update("app-1", workspaces="*", scopes=["logs"])
    assert (updated.workspaces, updated.scopes, updated.revoked) == ("*", ["logs"], False)
    assert scripted.seen("PATCH", "/api/v1/applications/app-1")[0].json() == {"workspaces": "*", "scopes": ["logs"]}
    with pytest.raises(UsageError, match="Nothing to change"):
        kr.applications.update("app-1")
    assert kr.applications.delete("app-1") is None
    assert len(scripted.seen("DELETE", "/api/v1/applications/app-1")) == 1


def test_connect_sessions_follow_the_contract(connect: Any, scripted: ScriptedServer) -> None:
    scripted.on("POST", "/api/v1/connect/sessions", Reply(201, {
        "id": "cs-1", "token": "kcs_page_token", "url": "http://127.0.0.1/connect/cs-1",
        "expires_at": "2030-01-01T00:10:00Z"}))
    kr = scripted_admin(connect, scripted)
    session = kr.connect_sessions.create("acme", connectors=["stripe", "github"], redirect_url="https://app/done",
                                         allowed_origins=["https://app"], expires_in=600)
    assert (session.id, session.url, session.token) == ("cs-1", "http://127.0.0.1/connect/cs-1", "kcs_page_token")
    assert "kcs_page_token" not in repr(session) and "token" not in session.raw
    assert session.expires_at == dt.datetime(2030, 1, 1, 0, 10, tzinfo=dt.UTC)
    assert scripted.seen("POST", "/api/v1/connect/sessions")[0].json() == {
        "workspace": "acme", "connectors": ["stripe", "github"], "redirect_url": "https://app/done",
        "allowed_origins": ["https://app"], "expires_in": 600}
    kr.connect_sessions.create("acme", source_id="src-1", config={"base_url": "https://x"})
    assert scripted.seen("POST", "/api/v1/connect/sessions")[1].json() == {
        "workspace": "acme", "source_id": "src-1", "config": {"base_url": "https://x"}}


def test_a_malformed_answer_is_an_unexpected_response(connect: Any, scripted: ScriptedServer) -> None:
    from keyrelay_client import UnexpectedResponse

    scripted.on("POST", "/api/v1/applications", Reply(201, {"id": "app-1"}))
    with pytest.raises(UnexpectedResponse, match="client_id"):
        scripted_admin(connect, scripted).applications.create("x")
    scripted.on("GET", "/api/v1/applications", Reply(200, body=b"<html>"))
    with pytest.raises(UnexpectedResponse, match="JSON"):
        scripted_admin(connect, scripted).applications.list()

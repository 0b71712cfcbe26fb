"""Applications and connect sessions against a live keyrelay (the SDK side is also tested against a scripted peer
in test_admin.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from keyrelay_client import Forbidden, NotFound, Unauthenticated
from support.keyrelay import KeyrelayServer
from support.upstream import FakeUpstream


def test_a_limited_application_mints_limited_tokens(client: Any, connect: Any, server: KeyrelayServer,
                                                    workspace: dict[str, str], echo: dict[str, Any],
                                                    upstream: FakeUpstream) -> None:
    app = client.applications.create("agent-" + uuid.uuid4().hex[:6], workspaces=[workspace["id"]],
                                     scopes=["proxy"])
    assert app.client_id and app.client_secret and app.client_secret not in repr(app)
    assert app.id in {a.id for a in client.applications.list()}

    agent = connect(server.url, client_id=app.client_id, client_secret=app.client_secret)
    answer = agent.request(echo["id"], "GET", upstream.url + "/echo")
    assert answer.status_code == 200
    with pytest.raises(Forbidden):
        agent.logs.list()  # not one of its scopes
    other = client.workspaces.create("other-" + uuid.uuid4().hex[:6])
    with pytest.raises((Forbidden, NotFound)):
        agent.sources.list(other.id)  # not one of its workspaces


def test_rotating_a_secret_retires_the_old_one(client: Any, connect: Any, server: KeyrelayServer) -> None:
    app = client.applications.create("rotate-" + uuid.uuid4().hex[:6], scopes=["logs"])
    rotated = client.applications.rotate_secret(app.id)
    assert rotated.id == app.id and rotated.client_secret != app.client_secret
    assert rotated.client_secret not in repr(rotated)
    with pytest.raises(Unauthenticated):
        connect(server.url, client_id=app.client_id, client_secret=app.client_secret).logs.list()
    assert isinstance(connect(server.url, client_id=app.client_id, client_secret=rotated.client_secret)
                      .logs.list(), list)


def test_a_deleted_application_gets_no_token(client: Any, connect: Any, server: KeyrelayServer) -> None:
    app = client.applications.create("gone-" + uuid.uuid4().hex[:6], scopes=["logs"])
    client.applications.delete(app.id)
    listed = {a.id: a for a in client.applications.list()}
    assert listed[app.id].revoked and listed[app.id].revoked_at is not None  # revoked, still listed
    with pytest.raises(Unauthenticated):
        connect(server.url, client_id=app.client_id, client_secret=app.client_secret).logs.list()


def test_a_connect_session_opens_a_page(client: Any, workspace: dict[str, str]) -> None:
    session = client.connect_sessions.create(workspace["name"], connectors=["stripe"], expires_in=600)
    assert session.id and session.token and session.token not in repr(session)
    assert session.expires_at is not None and session.expires_at > dt.datetime.now(dt.UTC)
    page = httpx.get(session.url, follow_redirects=False, timeout=10)
    assert page.status_code == 303  # one connector offered: the page goes straight to its form
    form = httpx.get(session.url, follow_redirects=True, timeout=10)
    assert form.status_code == 200 and form.url.path == f"/connect/{session.token}/stripe"


def test_narrowing_an_application_reaches_its_tokens(client: Any, connect: Any, server: KeyrelayServer) -> None:
    app = client.applications.create("narrow-" + uuid.uuid4().hex[:6], scopes=["logs", "proxy"])
    agent = connect(server.url, client_id=app.client_id, client_secret=app.client_secret)
    assert isinstance(agent.logs.list(), list)
    narrowed = client.applications.update(app.id, scopes=["proxy"])
    assert narrowed.id == app.id and narrowed.scopes == ["proxy"] and not narrowed.revoked
    with pytest.raises(Forbidden):
        agent.logs.list()  # the token already issued carries what the application holds now

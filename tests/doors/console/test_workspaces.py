"""Workspaces in the console: create and delete through forms that each need their own session's CSRF token
for that very form, names that render as text, and a confirmation page before a deletion."""

from __future__ import annotations

import re

import pytest

from support.console import ConsoleClient, assert_page_headers, csrf_of, notice
from support.keyrelay import Admin, KeyrelayServer

XSS = "<img src=x onerror=alert(1)>"


def _workspaces(admin: Admin) -> dict[str, str]:
    return {w["name"]: w["id"] for w in admin.get("/api/v1/workspaces").json()["data"]}


def test_a_workspace_is_created_through_the_form(kr: KeyrelayServer, admin: Admin) -> None:
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit("/console/workspaces", "/console/workspaces", {"name": "acme"})
    assert r.status_code == 303
    ws = _workspaces(admin)["acme"]
    assert r.headers["location"] == f"/console/workspaces/{ws}?done=created"
    page = c.get(r.headers["location"])
    assert page.status_code == 200
    assert_page_headers(page)
    assert "Workspace created" in notice(page.text, "ok") and ws in page.text
    listing = c.get("/console/workspaces").text
    assert f'href="/console/workspaces/{ws}">acme</a>' in listing


def test_a_duplicate_name_comes_back_with_the_reason(kr: KeyrelayServer, admin: Admin) -> None:
    admin.workspace("acme")
    c = ConsoleClient(kr.url).signed_in()
    r = c.submit("/console/workspaces", "/console/workspaces", {"name": "acme"})
    assert r.status_code == 409
    assert "exists" in notice(r.text).lower()
    assert 'value="acme"' in r.text


@pytest.mark.parametrize("case", ["missing", "another session's", "another form's", "another object's"])
def test_a_form_needs_a_csrf_token_of_this_session_for_this_form(kr: KeyrelayServer, admin: Admin,
                                                                   case: str) -> None:
    victim, other = admin.workspace("victim"), admin.workspace("other")
    c, attacker = ConsoleClient(kr.url).signed_in(), ConsoleClient(kr.url).signed_in()
    token = {
        "missing": "",
        "another session's": csrf_of(attacker.get(f"/console/workspaces/{victim}/delete").text,
                                     f"/console/workspaces/{victim}/delete"),
        "another form's": csrf_of(c.get("/console/keys").text, "/console/keys"),
        "another object's": csrf_of(c.get(f"/console/workspaces/{other}/delete").text,
                                    f"/console/workspaces/{other}/delete"),
    }[case]
    r = c.http.post(f"/console/workspaces/{victim}/delete", data={"csrf": token})
    assert r.status_code == 403
    assert_page_headers(r)
    assert "cannot be accepted" in r.text
    assert set(_workspaces(admin)) == {"victim", "other"}
    r = c.http.post("/console/workspaces", data={"csrf": token, "name": "planted"})
    assert r.status_code == 403 and "planted" not in _workspaces(admin)


def test_deleting_asks_first_and_then_deletes(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace("acme")
    admin.api_key(ws, ["proxy"])
    c = ConsoleClient(kr.url).signed_in()
    confirm = c.get(f"/console/workspaces/{ws}/delete")
    assert confirm.status_code == 200 and "Delete workspace acme?" in confirm.text
    assert "1 active API key(s) stop working" in confirm.text
    assert "acme" in _workspaces(admin)  # looking at the question deletes nothing
    r = c.submit(f"/console/workspaces/{ws}/delete", f"/console/workspaces/{ws}/delete", {})
    assert (r.status_code, r.headers["location"]) == (303, "/console/workspaces?done=deleted")
    assert _workspaces(admin) == {}
    assert "were deleted" in notice(c.get(r.headers["location"]).text, "ok")
    assert c.get(f"/console/workspaces/{ws}").status_code == 404


def test_a_hostile_workspace_name_renders_as_text(kr: KeyrelayServer, admin: Admin) -> None:
    ws = admin.workspace(XSS)
    c = ConsoleClient(kr.url).signed_in()
    for path in ("/console/", "/console/workspaces", f"/console/workspaces/{ws}", f"/console/workspaces/{ws}/delete",
                 "/console/sources", "/console/keys", "/console/logs", "/console/sources/new"):
        page = c.get(path)
        assert page.status_code == 200, path
        assert XSS not in page.text and "<img" not in page.text, path
    assert "&lt;img src=x onerror=alert(1)&gt;" in c.get(f"/console/workspaces/{ws}").text
    assert re.search(r"&lt;img src=x onerror=alert\(1\)&gt;</option>", c.get("/console/keys").text)

"""Signing in and out. Two ways in, both for an application only (docs/console.md: sign-in):

* its client id and secret, on `/console/sign-in`;
* a one-time link from `keyrelay console-link`: `GET /console/link?token=...` shows a button, and only the
  POST it sends spends the link (so a link preview or a prerendering browser cannot use it up). The form posts
  back to the page's own address, so the token is never written into the page.

The sign-in forms carry CSRF tokens bound to a short-lived pre-session cookie; a successful sign-in always
starts a new session (a session value planted before sign-in is never adopted).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from keyrelay.doors.console import fmt
from keyrelay.doors.console.session import (
    PRE_COOKIE,
    SESSION_COOKIE,
    ConsoleRoute,
    Signed,
    clear_cookie,
    cookie,
    html,
    parts,
    pre_session,
    read_form,
    redirect,
    remote,
    safe_next,
)
from keyrelay.errors import KeyrelayError
from keyrelay.web.pages import render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
EXPIRED_FORM = "This sign-in form expired or did not come from this server. Try again."


def _page(request: Request, template: str, *, status: int = 200, cookies: list[str] | None = None,
          retry_after: int | None = None, **context: object) -> Response:
    _, _, _, csrf = parts(request)
    pre, new_cookies = pre_session(request)
    body = render(template, signed_in=False, nav="", fmt=fmt, csrf=lambda purpose: csrf.token(pre, purpose),
                  **context)
    return html(body, status=status, cookies=[*(cookies or []), *new_cookies], retry_after=retry_after)


@router.get("/console")
async def bare() -> Response:
    return redirect("/console/")


@router.get("/console/sign-in")
async def sign_in_page(request: Request, next: str | None = None, ended: str | None = None,
                       signed_out: str | None = None) -> Response:
    _, sessions, _, _ = parts(request)
    if await sessions.session(request.cookies.get(SESSION_COOKIE), touch=False) is not None:
        return redirect(safe_next(next))
    notice = ("Your session ended. Sign in again." if ended else
              "You are signed out." if signed_out else None)
    return _page(request, "console/sign_in.html", next=safe_next(next), client_id="", error=None, notice=notice)


@router.post("/console/sign-in")
async def sign_in(request: Request) -> Response:
    _, sessions, _, csrf = parts(request)
    form = await read_form(request)
    target = safe_next(form.get("next"))
    client_id = form.get("client_id").strip()
    if not csrf.valid(request.cookies.get(PRE_COOKIE, ""), "sign-in", form.get("csrf")):
        return _page(request, "console/sign_in.html", status=403, next=target, client_id=client_id,
                     error=EXPIRED_FORM, notice=None)
    try:
        new = await sessions.sign_in(client_id, form.get("client_secret").strip(), remote=remote(request))
    except KeyrelayError as err:
        return _page(request, "console/sign_in.html", status=err.status, next=target, client_id=client_id,
                     error=err.message, notice=None, retry_after=err.retry_after)
    return redirect(target, cookies=[cookie(request, SESSION_COOKIE, new.token), clear_cookie(request, PRE_COOKIE)])


@router.get("/console/link")
async def link_page(request: Request) -> Response:
    return _page(request, "console/link.html", error=None)


@router.post("/console/link")
async def link_sign_in(request: Request, token: str = "") -> Response:
    _, sessions, _, csrf = parts(request)
    form = await read_form(request)
    if not csrf.valid(request.cookies.get(PRE_COOKIE, ""), "sign-in-link", form.get("csrf")):
        return _page(request, "console/link.html", status=403, error=EXPIRED_FORM)
    try:
        new = await sessions.sign_in_with_link(token, remote=remote(request))
    except KeyrelayError as err:
        return _page(request, "console/link.html", status=err.status, error=err.message, retry_after=err.retry_after)
    return redirect("/console/", cookies=[cookie(request, SESSION_COOKIE, new.token),
                                          clear_cookie(request, PRE_COOKIE)])


@router.post("/console/sign-out")
async def sign_out(c: Signed) -> Response:
    await c.form("sign-out")
    await c.sessions.sign_out(c.session)
    return redirect("/console/sign-in?signed_out=1", cookies=[clear_cookie(c.request, SESSION_COOKIE)])

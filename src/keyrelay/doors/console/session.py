"""What every console route shares: the signed-in session (from its cookie, never from a bearer token), CSRF
checks on every form, form parsing, and pages with the strict security headers (docs/console.md: security).

A route takes `c: Signed` (any live session) or `c: Managing` (a session whose application holds `admin`, as the
admin API's routes need): the dependency answers a redirect to the sign-in page instead when there is no live
session, and a "Not allowed" page (inside the console's frame, so signing out still works) when the application
lacks the power. `ConsoleRoute` turns keyrelay's errors into an HTML page (the console never answers JSON errors, except
on its event stream).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from keyrelay.doors.console import fmt
from keyrelay.errors import Forbidden, InvalidRequest, KeyrelayError
from keyrelay.http.deps import services
from keyrelay.http.services import Services
from keyrelay.manage.console import ConsoleService
from keyrelay.manage.traffic import TrafficService
from keyrelay.model import Application, Caller, ConsoleSession, Scope, Workspace
from keyrelay.web.csrf import Csrf
from keyrelay.web.headers import page_headers
from keyrelay.web.pages import render

SESSION_COOKIE = "kr_console"
PRE_COOKIE = "kr_console_pre"  # binds the sign-in forms' CSRF tokens before there is a session
COOKIE_PATH = "/console"
PRE_SECONDS = 1800
_MAX_FIELDS = 400


class Exit(Exception):
    """Not an error: a route's early answer (a redirect, a refusal page)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def html(body: bytes, *, status: int = 200, cookies: Sequence[str] = (), retry_after: int | None = None) -> Response:
    resp = Response(body, status_code=status)
    resp.raw_headers = [*page_headers(length=len(body)), *((b"set-cookie", c.encode()) for c in cookies)]
    if retry_after is not None:
        resp.raw_headers.append((b"retry-after", str(retry_after).encode()))
    return resp


def redirect(location: str, *, cookies: Sequence[str] = ()) -> Response:
    resp = Response(status_code=303)
    resp.raw_headers = [(b"location", location.encode()), (b"content-length", b"0"), (b"cache-control", b"no-store"),
                        (b"referrer-policy", b"no-referrer"),
                        *((b"set-cookie", c.encode()) for c in cookies)]
    return resp


def cookie(request: Request, name: str, value: str, *, max_age: int | None = None) -> str:
    """A console cookie: HttpOnly, SameSite=Strict, only sent to /console, Secure under TLS."""
    parts = [f"{name}={value}", f"Path={COOKIE_PATH}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    setting = services(request).settings.console_secure_cookie
    if setting or (setting is None and request.url.scheme == "https"):
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie(request: Request, name: str) -> str:
    return cookie(request, name, "", max_age=0)


def remote(request: Request) -> str:
    """The TCP peer's address (never a client-supplied forwarding header)."""
    return request.client.host if request.client else "unknown"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path, never another site or another part of this one."""
    if not value or not value.startswith("/console/") or not value.isascii() or not value.isprintable():
        return "/console/"
    path = value.split("?", 1)[0]
    if "//" in value or "\\" in value or "%2e" in path.lower() or {".", ".."} & set(path.split("/")):
        return "/console/"
    return value


def sign_in_url(request: Request, *, ended: bool = False) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"/console/sign-in?next={quote(safe_next(target), safe='/')}"
    return url + ("&ended=1" if ended else "")


@dataclass(frozen=True)
class Form:
    """A submitted urlencoded form: every value of every field, as text."""

    values: Mapping[str, list[str]]

    def get(self, name: str) -> str:
        found = self.values.get(name)
        return found[0] if found else ""

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, ()))


async def read_form(request: Request) -> Form:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("Forms are sent as application/x-www-form-urlencoded", field="body")
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The form could not be read", field="body") from None
    values: dict[str, list[str]] = {}
    for k, v in pairs:
        values.setdefault(k, []).append(v)
    return Form(values)


def parts(request: Request) -> tuple[Services, ConsoleService, TrafficService, Csrf]:
    svc = services(request)
    sessions, traffic, csrf = (svc.extras.get(k) for k in ("console", "traffic", "console_csrf"))
    assert isinstance(sessions, ConsoleService) and isinstance(traffic, TrafficService) and isinstance(csrf, Csrf)
    return svc, sessions, traffic, csrf


@dataclass
class Console:
    """One signed-in request: the services, the session and its application's Caller."""

    request: Request
    svc: Services
    sessions: ConsoleService
    traffic: TrafficService
    csrf: Csrf
    session: ConsoleSession
    cookies: list[str] = field(default_factory=list)

    @property
    def caller(self) -> Caller:
        return self.sessions.caller(self.session)

    @property
    def me(self) -> Application:
        return self.session.application

    @property
    def reach(self) -> frozenset[str] | None:
        """The workspace ids the signed-in application reaches (None: every workspace)."""
        return self.caller.workspaces

    async def workspaces(self) -> list[Workspace]:
        """The workspaces this application reaches, by name (never another application's customers)."""
        return [w for w in await self.svc.workspaces.list(None) if self.caller.can_reach(w.id)]

    def need_every_workspace(self, what: str) -> None:
        if not self.caller.every_workspace:
            raise Forbidden(f"{what} needs an application that reaches every workspace; this one is limited to "
                            "some workspaces")

    def token(self, purpose: str) -> str:
        return self.csrf.token(self.session.id, purpose)

    async def form(self, purpose: str) -> Form:
        """The submitted form, if its CSRF token was issued to this session for this purpose; else a 403 page."""
        form = await read_form(self.request)
        if not self.csrf.valid(self.session.id, purpose, form.get("csrf")):
            raise Exit(self.page("console/error.html", status=403, title="This form cannot be accepted",
                                 message="It was not sent from a page of this console session, or it belongs to "
                                         "another form. Go back, reload the page and try again."))
        return form

    def page(self, template: str, *, status: int = 200, nav: str = "", retry_after: int | None = None,
             **context: Any) -> Response:
        now = self.sessions.clock()
        caller = self.caller
        power = {"admin": caller.is_admin, "logs": Scope.LOGS in caller.scopes, "every": caller.every_workspace,
                 "approve": caller.is_admin and Scope.APPROVE in caller.scopes}
        body = render(template, me=self.me, nav=nav, csrf=self.token, fmt=fmt, now=now, signed_in=True, json=json,
                      power=power, **context)
        return html(body, status=status, cookies=self.cookies, retry_after=retry_after)


async def signed_in(request: Request) -> Console:
    """The live session of this request's cookie; otherwise the answer is a redirect to the sign-in page.
    An `Authorization` header plays no part: a bearer token never opens the console."""
    svc, sessions, traffic, csrf = parts(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await sessions.session(token)
    if session is None:
        cookies = [clear_cookie(request, SESSION_COOKIE)] if token else []
        raise Exit(redirect(sign_in_url(request, ended=bool(token)), cookies=cookies))
    c = Console(request, svc, sessions, traffic, csrf, session)
    request.state.console = c  # from here on, a refusal is a page inside the console's frame
    return c


NEEDS_ADMIN = ("This page needs an application holding the `admin` scope (as the admin API does); the application "
               "you signed in as does not hold it.")


async def managing(request: Request) -> Console:
    """A live session whose application holds `admin`: what every admin API route needs."""
    c = await signed_in(request)
    if not c.caller.is_admin:
        raise Forbidden(NEEDS_ADMIN)
    return c


Signed = Annotated[Console, Depends(signed_in)]
Managing = Annotated[Console, Depends(managing)]


def pre_session(request: Request) -> tuple[str, list[str]]:
    """The pre-session value that binds the sign-in forms' CSRF tokens, and the cookie to set if it is new."""
    value = request.cookies.get(PRE_COOKIE, "")
    if len(value) == 43 and value.replace("-", "").replace("_", "").isalnum():
        return value, []
    value = secrets.token_urlsafe(32)
    return value, [cookie(request, PRE_COOKIE, value, max_age=PRE_SECONDS)]


def error_page(request: Request, err: KeyrelayError) -> Response:
    signed: Console | None = getattr(request.state, "console", None)
    context = {"title": _TITLES.get(err.status, "Something went wrong"), "message": err.message}
    if signed is not None:
        return signed.page("console/error.html", status=err.status, retry_after=err.retry_after, **context)
    body = render("console/error.html", signed_in=False, nav="", fmt=fmt, **context)
    return html(body, status=err.status, retry_after=err.retry_after)


_TITLES = {400: "That did not work", 403: "Not allowed", 404: "Not found", 409: "Already exists",
           422: "That did not work", 429: "Too many attempts", 503: "Unavailable"}


class ConsoleRoute(APIRoute):
    """Console routes answer HTML: an early `Exit` as it is, keyrelay's errors as an error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except Exit as done:
                return done.response
            except KeyrelayError as err:
                return error_page(request, err)

        return handler

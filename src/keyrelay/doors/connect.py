"""The connect page (docs/connect.md): where an end customer connects an account, from the link of a connect
session. Server-rendered, plain forms and redirects (it works without JavaScript; `connect.js` only adds the
embedding messages and opens sign-in in a new tab inside a frame).

    GET  /connect/{token}                      pick a connector (or go straight to the only one)
    GET  /connect/{token}/{connector}          its form: a sign-in button (OAuth) and/or an API-key form
    POST /connect/{token}/{connector}          check the key live; store it; done (or redirect_url)
    POST /connect/{token}/{connector}/oauth    start the provider's sign-in (state + PKCE)
    GET  /connect/oauth/callback               the provider sends the browser back here
    GET  /connect/{token}/status, /done        what an embedding frame polls after sign-in in another tab

Every page: autoescaped templates, the strict CSP, framing only by the session's `allowed_origins`, CSRF tokens
on every form, secrets never rendered back, never in a URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response

from keyrelay.errors import InvalidRequest, KeyrelayError, NotFound
from keyrelay.http.deps import services
from keyrelay.http.services import Services
from keyrelay.manage.connect import ConnectService, ConnectSession, Unusable
from keyrelay.manage.connections import CallbackProblem, Connected, ConnectFlow, Offer
from keyrelay.web.csrf import Csrf
from keyrelay.web.headers import page_headers
from keyrelay.web.pages import render

router = APIRouter(include_in_schema=False)
Svc = Annotated[Services, Depends(services)]
CALLBACK_PATH = "/connect/oauth/callback"
COOKIE_PREFIX = "kr_connect_"
MAX_FORM_FIELDS = 100
_UNUSABLE = {
    "unknown": (404, "This connection link is not valid",
                "Check that you opened the whole link, or ask the app that sent you here for a new one."),
    "expired": (410, "This connection link has expired",
                "Links to connect an account work for a limited time. Ask the app that sent you here for a new one."),
    "used": (410, "This connection link was already used",
             "An account was already connected with it. Ask the app that sent you here for a new link to "
             "connect another one."),
    "exhausted": (429, "Too many attempts",
                  "This link was used to try too many credentials. Ask the app that sent you here for a new one."),
}


def _flow(svc: Services) -> ConnectFlow:
    return cast(ConnectFlow, svc.extras["connect_flow"])


def _sessions(svc: Services) -> ConnectService:
    return cast(ConnectService, svc.extras["connect"])


def _csrf(svc: Services) -> Csrf:
    return cast(Csrf, svc.extras["connect_csrf"])


def _base(request: Request, svc: Services) -> str:
    return svc.settings.public_url or f"{request.url.scheme}://{request.url.netloc}"


def page(body: bytes, *, status: int = 200, session: ConnectSession | None = None, form_action: Sequence[str] = (),
         headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    """A connect page with the security headers: frameable only by the session's allowed origins. When those are
    set, the opener is kept (an app that opened the page in a popup gets its message)."""
    origins = session.allowed_origins if session is not None else ()
    raw = page_headers(length=len(body), frame_ancestors=origins, form_action=form_action)
    if origins:
        raw = [(k, b"unsafe-none" if k == b"cross-origin-opener-policy" else v) for k, v in raw]
    resp = Response(body, status_code=status)
    resp.raw_headers = [*raw, *headers]
    return resp


def redirect(location: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    resp = Response(status_code=303)
    resp.raw_headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"),
                        (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"), *headers]
    return resp


def _common(session: ConnectSession | None, token: str | None) -> dict[str, Any]:
    cancel = None if session is None else session.result_url(status="cancelled", source_id=None)
    return {"token": token, "cancel_url": cancel, "reconnect": bool(session and session.source_id)}


def unusable_page(err: Unusable) -> Response:
    status, title, text = _UNUSABLE.get(err.reason, _UNUSABLE["unknown"])
    return page(render("connect/error.html", title=title, message=text, retry_url=None, **_common(None, None)),
                status=status)


def error_page(status: int, title: str, message: str, *, session: ConnectSession | None = None,
               token: str | None = None, retry_url: str | None = None,
               headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    return page(render("connect/error.html", title=title, message=message, retry_url=retry_url,
                       **_common(session, token)), status=status, session=session, headers=headers)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (first value of each name); never logged."""
    raw = await request.body()
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The form could not be read") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


async def _form_page(request: Request, svc: Services, session: ConnectSession, token: str, offer: Offer, *,
                     status: int = 200, error: str | None = None, error_field: str | None = None,
                     values: Mapping[str, str] | None = None) -> Response:
    name = offer.spec.name
    origin = await _flow(svc).authorize_origin(name) if offer.oauth else None
    body = render(
        "connect/form.html", spec=offer.spec, offer=offer, csrf=_csrf(svc).token(session.id, f"connect:{name}"),
        action=f"/connect/{token}/{name}", error=error, error_field=error_field,
        values={k: v for k, v in (values or {}).items() if k.startswith("config.")},  # never a credential
        back_url=f"/connect/{token}" if len(session.connectors) > 1 else None, **_common(session, token))
    return page(body, status=status, session=session, form_action=[origin] if origin else [])


def _done(svc: Services, done: Connected, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    s, src = done.session, done.source
    next_url = s.result_url(status="connected", source_id=src.id)
    if next_url is not None and not s.allowed_origins:
        return redirect(next_url, headers)
    result = {"type": "keyrelay:connect", "connect_session": s.id, "status": "connected", "source_id": src.id}
    spec = svc.catalog.get(src.connector)
    body = render("connect/done.html", title=spec.title if spec else src.connector, result=json.dumps(result),
                  origins=json.dumps(list(s.allowed_origins)), next_url=next_url, reconnected=done.reconnected,
                  **_common(None, None))
    return page(body, session=s, headers=headers)


def _scrub(message: str, secrets: Sequence[str]) -> str:
    """An upstream's reason, with anything the customer typed as a secret cut out (belt and braces: the
    pipeline already redacts what it injected)."""
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= 4:
            message = message.replace(s, "****")
    return message


def cookie_name(state: str) -> str:
    return COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


def _cookie(name: str, value: str, *, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    flags = f"; Path={CALLBACK_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return b"set-cookie", f"{name}={value}{flags}".encode()


# --- routes (the callback first: `/connect/oauth/callback` must not be read as /connect/{token}/{connector}) ---

@router.get(CALLBACK_PATH)
async def oauth_callback(request: Request, svc: Svc, state: str | None = None, code: str | None = None,
                         error: str | None = None) -> Response:
    name = cookie_name(state) if state else None
    browser = request.cookies.get(name) if name else None
    secure = _base(request, svc).startswith("https://")
    clear = [_cookie(name, "", max_age=0, secure=secure)] if name and browser else []
    try:
        done = await _flow(svc).finish_oauth(state=state, code=code, error=error, browser_token=browser,
                                             redirect_uri=_base(request, svc) + CALLBACK_PATH)
    except CallbackProblem as p:
        retry = f"/connect/{p.token}/{p.connector}" if p.retry and p.token and p.connector else None
        return error_page(400, "The account was not connected", p.message, session=p.session if p.retry else None,
                          token=p.token if p.retry else None, retry_url=retry, headers=clear)
    return _done(svc, done, clear)


@router.get("/connect/{token}")
async def pick(token: str, request: Request, svc: Svc) -> Response:
    try:
        session = await _sessions(svc).lookup(token)
    except Unusable as err:
        return unusable_page(err)
    offers = await _flow(svc).offers(session)
    if len(offers) == 1:
        return redirect(f"/connect/{token}/{offers[0].spec.name}")
    return page(render("connect/pick.html", offers=offers, **_common(session, token)), session=session)


@router.get("/connect/{token}/status")
async def status(token: str, svc: Svc) -> Response:
    """For an embedding frame waiting on a sign-in in another tab: `pending`, `connected` or `expired`."""
    try:
        session = await _sessions(svc).lookup(token)
    except Unusable as err:
        if err.session is None:
            raise NotFound("Connect session not found") from None
        session = err.session
    state = "connected" if session.connected_source_id else "expired" if session.status != "pending" else "pending"
    body = json.dumps({"status": state}).encode()
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


@router.get("/connect/{token}/done")
async def done_page(token: str, svc: Svc) -> Response:
    try:
        await _sessions(svc).lookup(token)
    except Unusable as err:
        s = err.session
        if err.reason == "used" and s is not None and s.connected_source_id:
            src = await _flow(svc).connected_source(s)
            if src is not None:
                return _done(svc, Connected(s, src, s.source_id is not None))
        return unusable_page(err)
    return redirect(f"/connect/{token}")


@router.get("/connect/{token}/{connector}")
async def form(token: str, connector: str, request: Request, svc: Svc) -> Response:
    try:
        session = await _sessions(svc).lookup(token)
    except Unusable as err:
        return unusable_page(err)
    try:
        offer = await _flow(svc).offer(session, connector)
    except NotFound:
        return error_page(404, "Not available here", "This page does not offer that connection.",
                          session=session, token=token, retry_url=f"/connect/{token}")
    return await _form_page(request, svc, session, token, offer)


async def _posted(request: Request, svc: Services, token: str,
                  connector: str) -> tuple[ConnectSession, Offer, dict[str, str]] | Response:
    """The session, offer and form of a POST, or the page to answer instead (unusable link, bad CSRF token)."""
    try:
        session = await _sessions(svc).lookup(token)
    except Unusable as err:
        return unusable_page(err)
    try:
        offer = await _flow(svc).offer(session, connector)
    except NotFound:
        return error_page(404, "Not available here", "This page does not offer that connection.",
                          session=session, token=token, retry_url=f"/connect/{token}")
    try:
        fields = await _form(request)
    except InvalidRequest:
        fields = {}
    if not _csrf(svc).valid(session.id, f"connect:{connector}", fields.get("csrf")):
        return error_page(403, "Please try again", "This form expired or did not come from this page. Reload the "
                          "page and submit it again.", session=session, token=token,
                          retry_url=f"/connect/{token}/{connector}")
    return session, offer, fields


@router.post("/connect/{token}/{connector}")
async def submit(token: str, connector: str, request: Request, svc: Svc) -> Response:
    got = await _posted(request, svc, token, connector)
    if isinstance(got, Response):
        return got
    session, offer, fields = got
    try:
        done = await _flow(svc).submit(session, connector, fields)
    except Unusable as err:
        return unusable_page(err)
    except InvalidRequest as err:
        return await _form_page(request, svc, session, token, offer, status=400, error=err.message,
                                error_field=err.field, values=fields)
    except KeyrelayError as err:
        secrets = [v for k, v in fields.items() if k.startswith("credentials.")]
        message = _scrub(err.message, secrets)
        return await _form_page(request, svc, session, token, offer, status=422, error=message, values=fields)
    return _done(svc, done)


@router.post("/connect/{token}/{connector}/oauth")
async def start_oauth(token: str, connector: str, request: Request, svc: Svc) -> Response:
    got = await _posted(request, svc, token, connector)
    if isinstance(got, Response):
        return got
    session, offer, fields = got
    base = _base(request, svc)
    try:
        started = await _flow(svc).start_oauth(session, connector, fields, redirect_uri=base + CALLBACK_PATH)
    except InvalidRequest as err:
        return await _form_page(request, svc, session, token, offer, status=400, error=err.message,
                                error_field=err.field, values=fields)
    except KeyrelayError as err:
        return await _form_page(request, svc, session, token, offer, status=502, error=err.message, values=fields)
    max_age = max(1, int(session.expires_at - _sessions(svc).now()))
    cookie = _cookie(cookie_name(started.state), token, max_age=min(max_age, 600),
                     secure=base.startswith("https://"))
    return redirect(started.url, [cookie])

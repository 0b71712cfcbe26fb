"""The FastAPI dependencies of the routes: the services (http/services.py) and the caller they authenticate."""

from __future__ import annotations

from fastapi import Request

from keyrelay.errors import Forbidden
from keyrelay.http.services import Services
from keyrelay.model import Caller, CallerKind, Scope
from keyrelay.pipeline.authorize import require_admin


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def caller(request: Request) -> Caller:
    """Any valid token (application, workspace-scoped or API key)."""
    return await services(request).authenticator.authenticate(request.headers.get("authorization"))


async def admin(request: Request) -> Caller:
    """Admin routes: an application token holding `admin`, without constraints; what it reaches is limited to its
    application's workspaces by the services (another workspace's object is a 404)."""
    who = await caller(request)
    require_admin(who)
    return who


async def application(request: Request) -> Caller:
    """An application token (any scopes) without constraints, e.g. to mint workspace-scoped tokens for the
    workspaces it reaches."""
    who = await caller(request)
    if not who.is_application or who.constraints:
        raise Forbidden("This route needs an application token without constraints")
    return who


def may_write_sources(who: Caller) -> None:
    """Seed 002's connector writes: an application token holding `admin`, or a workspace-scoped token of such an
    application in its own workspace; never an API key or a token with constraints."""
    if who.kind is CallerKind.API_KEY or who.constraints or Scope.ADMIN not in who.scopes:
        raise Forbidden("This route needs an application or workspace-scoped token whose application holds 'admin'")


def need_scope(who: Caller, scope: Scope) -> None:
    if scope not in who.scopes:
        raise Forbidden(f"Token lacks the '{scope.value}' scope")

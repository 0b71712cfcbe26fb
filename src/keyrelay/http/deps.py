"""What the doors receive from the composition root, and the FastAPI dependencies that authenticate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from keyrelay.connectors.execute import ConnectorService
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import Forbidden
from keyrelay.manage.access import AccessService
from keyrelay.manage.sources import SourceService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.model import Caller, Scope
from keyrelay.pipeline.authenticate import Authenticator
from keyrelay.pipeline.authorize import require_admin
from keyrelay.ports import RequestLogStore, Vault
from keyrelay.settings import Settings


@dataclass
class Services:
    settings: Settings
    authenticator: Authenticator
    access: AccessService
    workspaces: WorkspaceService
    sources: SourceService
    catalog: Mapping[str, ConnectorSpec]
    logs: RequestLogStore
    vault: Vault
    ready: Callable[[], Awaitable[None]]
    connectors: ConnectorService
    extras: dict[str, Any]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def caller(request: Request) -> Caller:
    """Any valid token (application, workspace-scoped or API key)."""
    return await services(request).authenticator.authenticate(request.headers.get("authorization"))


async def admin(request: Request) -> Caller:
    """Only application tokens may call admin routes."""
    who = await caller(request)
    require_admin(who)
    return who


def need_scope(who: Caller, scope: Scope) -> None:
    if scope not in who.scopes:
        raise Forbidden(f"Token lacks the '{scope.value}' scope")

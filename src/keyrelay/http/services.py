"""What the doors receive from the composition root (runtime.py builds it once per process). Free of the admin
framework, so that building it does not load FastAPI (app.py loads it with the first route that needs it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyrelay.connectors.execute import ConnectorService
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.manage.access import AccessService
from keyrelay.manage.sources import SourceService
from keyrelay.manage.workspaces import WorkspaceService
from keyrelay.pipeline.authenticate import Authenticator
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

"""Workspaces (one per end customer): create, find by name, read, list, delete."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from keyrelay.errors import InvalidRequest, NotFound
from keyrelay.model import Caller, Workspace
from keyrelay.ports import Clock, WorkspaceStore

NAME_MAX = 200


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise InvalidRequest(f"{field} must be a non-empty string of at most {NAME_MAX} characters", field=field)
    if any(ord(c) < 0x20 for c in name):
        raise InvalidRequest(f"{field} may not contain control characters", field=field)
    return name.strip()


class WorkspaceService:
    def __init__(self, *, store: WorkspaceStore, clock: Clock, on_change: Callable[[], None] = lambda: None) -> None:
        self._workspaces = store
        self._clock = clock
        self.on_change = on_change  # a deletion takes the workspace's sources with it

    async def create(self, name: Any) -> Workspace:
        return await self._workspaces.create_workspace(id=str(uuid.uuid4()), name=check_name(name),
                                                       now=self._clock())

    async def named(self, name: Any, *, create: bool) -> Workspace:
        name = check_name(name, "workspace_name")
        found = await self._workspaces.find_workspace(name)
        if found is not None or not create:
            if found is None:
                raise NotFound("Workspace not found")
            return found
        return await self.create(name)

    async def get(self, caller: Caller, workspace_id: str) -> Workspace:
        ws = await self._workspaces.get_workspace(workspace_id)
        if ws is None or not caller.can_reach(ws.id):
            raise NotFound("Workspace not found")
        return ws

    async def list(self, name_contains: str | None) -> list[Workspace]:
        return await self._workspaces.list_workspaces(name_contains=name_contains)

    async def delete(self, caller: Caller, workspace_id: str) -> None:
        ws = await self.get(caller, workspace_id)
        await self._workspaces.delete_workspace(ws.id)
        self.on_change()

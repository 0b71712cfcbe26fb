"""Step 2: may this caller use this scope in this workspace? Cross-tenant answers look like 'not found'."""

from __future__ import annotations

from keyrelay.errors import Forbidden, NotFound
from keyrelay.model import Caller, Scope


def authorize(caller: Caller, *, workspace_id: str, scope: Scope, what: str = "Source") -> None:
    if not caller.can_reach(workspace_id):
        raise NotFound(f"{what} not found")
    if scope not in caller.scopes:
        raise Forbidden(f"Token lacks the '{scope.value}' scope")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise Forbidden("This route needs an application token holding the 'admin' scope")

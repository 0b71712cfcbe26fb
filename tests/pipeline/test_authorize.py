"""Step 2 (pipeline/authorize.py): another tenant's source looks like no source; a missing scope is named."""

from __future__ import annotations

import pytest

from keyrelay.errors import Forbidden, NotFound
from keyrelay.model import ALL_SCOPES, Caller, CallerKind, Scope
from keyrelay.pipeline.authorize import authorize, require_admin

KEY = Caller(kind=CallerKind.API_KEY, id="key:k", workspace_id="ws-a", scopes=frozenset({Scope.PROXY}))
APP = Caller(kind=CallerKind.APPLICATION, id="app:a", workspace_id=None, scopes=ALL_SCOPES)


def test_a_caller_reaches_its_own_workspace_with_the_scope() -> None:
    authorize(KEY, workspace_id="ws-a", scope=Scope.PROXY)
    authorize(APP, workspace_id="any", scope=Scope.FILES)


def test_another_workspace_is_not_found_even_without_the_scope() -> None:
    with pytest.raises(NotFound, match="Source not found"):
        authorize(KEY, workspace_id="ws-b", scope=Scope.FILES)  # tenancy is checked before the scope
    with pytest.raises(NotFound, match="Workspace not found"):
        authorize(KEY, workspace_id="ws-b", scope=Scope.PROXY, what="Workspace")


def test_a_missing_scope_is_forbidden_and_named() -> None:
    with pytest.raises(Forbidden, match="'files'"):
        authorize(KEY, workspace_id="ws-a", scope=Scope.FILES)


def test_only_applications_are_admins() -> None:
    require_admin(APP)
    with pytest.raises(Forbidden):
        require_admin(KEY)

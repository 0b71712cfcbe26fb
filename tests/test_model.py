"""The values that flow through keyrelay (model.py): secrets never print, policies are built from validated
JSON, callers reach only their own workspace."""

from __future__ import annotations

import pytest

from keyrelay.model import ALL_SCOPES, Caller, CallerKind, Credentials, Policy, Scope, Secret, Source


def test_a_secret_never_prints_and_equals_only_itself() -> None:
    s = Secret("hunter2")
    assert repr(s) == "Secret('***')" and str(s) == "***" and f"{s}" == "***" and s.reveal() == "hunter2"
    assert s == s and s != Secret("hunter2") and len({s, Secret("hunter2")}) == 2


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "tab\t", "nul\x00", "del\x7f"])
def test_a_secret_may_not_hold_control_characters(value: str) -> None:
    with pytest.raises(ValueError, match="control characters") as err:
        Secret(value)
    assert value not in str(err.value)


def test_credentials_show_field_names_only() -> None:
    assert repr(Credentials({"bearer_token": "tok-1", "api_key": {"value": "k"}})) == \
        "Credentials(fields=['api_key', 'bearer_token'])"


def test_a_policy_from_json_normalises_case_and_types() -> None:
    pol = Policy.from_mapping({"allowed_methods": ["get", "Post"], "forward_headers": ["X-Trace"],
                               "timeout_seconds": 5, "allow_writes": 1})
    assert pol.allowed_methods == frozenset({"GET", "POST"}) and pol.forward_headers == frozenset({"x-trace"})
    assert pol.timeout_seconds == 5.0 and isinstance(pol.timeout_seconds, float) and pol.allow_writes is True
    assert Policy.from_mapping({}) == Policy()


def test_callers_reach_their_own_workspace_and_applications_reach_all() -> None:
    key = Caller(kind=CallerKind.API_KEY, id="key:1", workspace_id="ws-a", scopes=frozenset({Scope.PROXY}))
    app = Caller(kind=CallerKind.APPLICATION, id="app:1", workspace_id=None, scopes=ALL_SCOPES)
    assert key.can_reach("ws-a") and not key.can_reach("ws-b") and not key.is_admin
    assert app.can_reach("ws-b") and app.is_admin


@pytest.mark.parametrize("status,active", [("active", True), ("needs_reauth", True), ("inactive", False)])
def test_only_an_inactive_source_is_inactive(status: str, active: bool) -> None:
    src = Source(id="s", workspace_id="w", connector="http", name="n", slug="s", config={}, policy=Policy(),
                 status=status, credential_fields=(), created_at=0, updated_at=0)
    assert src.active is active

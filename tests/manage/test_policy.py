"""Policy validation (manage/policy.py): every field's type, bounds and default, and how an update merges with
the stored policy (docs/security.md: source policy). Each bound is tested on both sides."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.manage.policy import check_policy

OK_AND_REFUSED: list[tuple[str, Any, Any]] = [
    ("allowed_methods", ["GET"] * 1 + [f"M{chr(65 + i)}" for i in range(15)], [f"M{chr(65 + i)}" for i in range(17)]),
    ("forward_headers", [f"x-h{i}" for i in range(64)], [f"x-h{i}" for i in range(65)]),
    ("rate_limit_per_minute", 1, 0),
    ("rate_limit_per_minute", 1_000_000, 1_000_001),
    ("timeout_seconds", 300, 300.5),
    ("timeout_seconds", 0.001, 0),
    ("max_body_bytes", 0, -1),
    ("max_body_bytes", 1024**3, 1024**3 + 1),
    ("cache_ttl_seconds", 86_400, 86_401),
    ("cache_ttl_seconds", 0, -1),
    ("allow_writes", True, "true"),
    ("allow_body_on_safe_methods", True, 1),
    ("timeout_seconds", 30, "30"),
    ("allowed_methods", ["GET", "post"], ["GET", "P0ST"]),
    ("forward_headers", ["X-Trace"], ["authorization"]),
    ("forward_headers", ["accept"], ["x_under"]),
]


@pytest.mark.parametrize(("field", "ok", "refused"), OK_AND_REFUSED)
def test_each_field_has_its_bounds(field: str, ok: Any, refused: Any) -> None:
    check_policy({field: ok}, catalog_api=False)
    with pytest.raises(InvalidRequest) as info:
        check_policy({field: refused}, catalog_api=False)
    assert info.value.field is not None and info.value.field.startswith(f"policy.{field}")


def test_defaults() -> None:
    generic = check_policy(None, catalog_api=False)
    assert generic["allowed_methods"] is None and generic["forward_headers"] is None
    assert generic["allow_writes"] is False and generic["allow_body_on_safe_methods"] is False
    assert generic["timeout_seconds"] == 30.0 and generic["rate_limit_per_minute"] is None
    assert check_policy(None, catalog_api=True)["allowed_methods"] == ["GET", "HEAD"]  # catalog: read-only


def test_normalised_values() -> None:
    out = check_policy({"allowed_methods": ["post", "GET", "get"], "forward_headers": ["X-Trace", "Accept"]},
                       catalog_api=False)
    assert out["allowed_methods"] == ["GET", "POST"] and out["forward_headers"] == ["accept", "x-trace"]


@pytest.mark.parametrize("data", [[], "GET", 3, {"unknown": 1}, {"allowed_methods": "GET"}])
def test_malformed_policies_are_refused(data: Any) -> None:
    with pytest.raises(InvalidRequest):
        check_policy(data, catalog_api=False)


def test_an_update_merges_and_null_resets() -> None:
    current = check_policy({"rate_limit_per_minute": 10, "allow_writes": True}, catalog_api=False)
    merged = check_policy({"timeout_seconds": 5}, catalog_api=False, current=current)
    assert merged["rate_limit_per_minute"] == 10 and merged["allow_writes"] is True and merged["timeout_seconds"] == 5
    reset = check_policy({"rate_limit_per_minute": None}, catalog_api=False, current=merged)
    assert reset["rate_limit_per_minute"] is None

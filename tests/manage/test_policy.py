"""Policy validation (manage/policy.py): every field's type, bounds and default, and how an update merges with
the stored policy (docs/security.md: source policy). Each bound is tested on both sides."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.manage.policy import READ_ONLY_METHODS, check_policy
from keyrelay.model import Policy

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


def test_defaults_allow_every_method_for_http_and_only_reads_for_catalog_connectors() -> None:
    http = check_policy(None, catalog_api=False)
    assert http["allowed_methods"] is None and http["timeout_seconds"] == 30.0 and http["allow_writes"] is False
    assert check_policy(None, catalog_api=True)["allowed_methods"] == READ_ONLY_METHODS == ["GET", "HEAD"]

def test_methods_are_upper_cased_deduplicated_and_sorted() -> None:
    out = check_policy({"allowed_methods": ["post", "GET", "get"]}, catalog_api=True)
    assert out["allowed_methods"] == ["GET", "POST"]

def test_forward_headers_are_lower_cased_and_sorted() -> None:
    assert check_policy({"forward_headers": ["X-B", "x-a"]}, catalog_api=False)["forward_headers"] == ["x-a", "x-b"]

@pytest.mark.parametrize("data,field", [
    ({"allowed_methods": ["GE T"]}, "policy.allowed_methods"),
    ({"allowed_methods": "GET"}, "policy.allowed_methods"),
    ({"rate_limit_per_minute": 0}, "policy.rate_limit_per_minute"),
    ({"rate_limit_per_minute": "5"}, "policy.rate_limit_per_minute"),  # strict: no coercion
    ({"timeout_seconds": 0}, "policy.timeout_seconds"),
    ({"timeout_seconds": 301}, "policy.timeout_seconds"),
    ({"max_body_bytes": -1}, "policy.max_body_bytes"),
    ({"cache_ttl_seconds": 86_401}, "policy.cache_ttl_seconds"),
    ({"forward_headers": ["authorization"]}, "policy.forward_headers"),  # never forwarded
    ({"surprise": 1}, "policy.surprise"),
    ([1], "policy"),
])
def test_an_invalid_policy_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_policy(data, catalog_api=False)
    assert err.value.field == field

@pytest.mark.parametrize("data", [{"rate_limit_per_minute": "canary-7c1"}, {"canary-7c1": 1},
                                  {"timeout_seconds": "canary-7c1"}])
def test_an_error_never_echoes_the_value(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_policy(data, catalog_api=False)
    assert "canary-7c1" not in err.value.message or err.value.field == "policy.canary-7c1"

def test_an_update_merges_into_the_current_policy() -> None:
    current = check_policy({"rate_limit_per_minute": 10, "allowed_methods": ["GET"]}, catalog_api=False)
    out = check_policy({"timeout_seconds": 5}, catalog_api=False, current=current)
    assert (out["rate_limit_per_minute"], out["allowed_methods"], out["timeout_seconds"]) == (10, ["GET"], 5.0)

def test_the_normalised_policy_is_what_the_pipeline_reads() -> None:
    pol = Policy.from_mapping(check_policy({"allowed_methods": ["get"], "forward_headers": ["X-Trace"],
                                            "timeout_seconds": 2}, catalog_api=False))
    assert pol.allowed_methods == frozenset({"GET"}) and pol.forward_headers == frozenset({"x-trace"})
    assert pol.timeout_seconds == 2.0

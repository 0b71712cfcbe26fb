"""A source's policy (manage/policy.py): validated strictly, normalised, with read-only defaults for catalog API
connectors; an error names the field and never echoes the value."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.errors import InvalidRequest
from keyrelay.manage.policy import READ_ONLY_METHODS, check_policy
from keyrelay.model import Policy


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

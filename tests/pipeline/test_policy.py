"""Step 5 (pipeline/policy.py): connector kind, method and declared body size, checked before any upstream
traffic."""

from __future__ import annotations

import pytest

from keyrelay.errors import MethodNotAllowed, PayloadTooLarge, WrongSourceType
from keyrelay.model import Policy, Source
from keyrelay.pipeline.policy import (
    API_CONNECTOR_KINDS,
    FILE_CONNECTOR_KINDS,
    body_limit,
    check_declared_length,
    check_kind,
    check_method,
)


def _source() -> Source:
    return Source(id="s", workspace_id="w", connector="s3", name="n", slug="bucket", config={}, policy=Policy(),
                  status="active", credential_fields=(), created_at=0, updated_at=0)


def test_a_source_of_the_wrong_kind_is_refused_by_name() -> None:
    check_kind(_source(), "files", FILE_CONNECTOR_KINDS)
    with pytest.raises(WrongSourceType, match="'bucket' is a files source, not a api source"):
        check_kind(_source(), "files", API_CONNECTOR_KINDS)
    with pytest.raises(WrongSourceType, match="unknown"):
        check_kind(_source(), None, API_CONNECTOR_KINDS)


@pytest.mark.parametrize("allowed,method,ok", [
    (None, "DELETE", True), (None, "TRACE", False), (None, "CONNECT", False),
    (frozenset({"GET"}), "GET", True), (frozenset({"GET"}), "POST", False),
    (frozenset({"GET", "TRACE"}), "TRACE", False),  # never forwarded, whatever the allowlist says
])
def test_methods_follow_the_allowlist_but_connect_and_trace_never_pass(allowed: frozenset[str] | None,
                                                                       method: str, ok: bool) -> None:
    if ok:
        check_method(Policy(allowed_methods=allowed), method)
    else:
        with pytest.raises(MethodNotAllowed, match=method):
            check_method(Policy(allowed_methods=allowed), method)


def test_the_body_limit_is_the_smaller_of_the_policy_and_the_default() -> None:
    assert body_limit(Policy(), 100) == 100
    assert body_limit(Policy(max_body_bytes=10), 100) == 10
    assert body_limit(Policy(max_body_bytes=1000), 100) == 100
    assert body_limit(Policy(max_body_bytes=0), 100) == 0


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    check_declared_length(None, 10)
    check_declared_length(10, 10)
    with pytest.raises(PayloadTooLarge):
        check_declared_length(11, 10)

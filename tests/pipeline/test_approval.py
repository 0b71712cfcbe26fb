"""Approvals, the pure part (pipeline/approval.py): which requests a rule parks, the request hash and what it
binds, the parked record, `Prefer: wait`, and the destination an approved request may go to."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keyrelay.errors import ApprovalMismatch, DestinationChanged
from keyrelay.model import ApprovalRule, BySlug, Door, Inbound, Policy, Source, Tail, Url
from keyrelay.pipeline import approval, build
from keyrelay.pipeline.approval import Parked

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@pytest.mark.parametrize(("rule", "method", "path", "action", "parked"), [
    (ApprovalRule(methods=WRITES), "POST", "/v1/charges", None, True),
    (ApprovalRule(methods=WRITES), "GET", "/v1/charges", None, False),
    (ApprovalRule(paths=("/v1/charges",)), "GET", "/v1/charges", None, True),
    (ApprovalRule(paths=("/v1/charges",)), "GET", "/v1/charges/ch_1", None, False),
    (ApprovalRule(paths=("/v1/charges/*",)), "GET", "/v1/charges/ch_1", None, True),
    (ApprovalRule(paths=("/v1/charges/*",)), "GET", "/v1/charges/ch_1/refunds", None, False),
    (ApprovalRule(paths=("/v1/charges/**",)), "GET", "/v1/charges/ch_1/refunds", None, True),
    (ApprovalRule(methods=frozenset({"POST"}), paths=("/v1/refunds",)), "POST", "/v1/refunds", None, True),
    (ApprovalRule(methods=frozenset({"POST"}), paths=("/v1/refunds",)), "POST", "/v1/charges", None, False),
    (ApprovalRule(methods=frozenset({"POST"}), paths=("/v1/refunds",)), "GET", "/v1/refunds", None, False),
    (ApprovalRule(entities_actions=("customers.create",)), "POST", "/v1/customers", "customers.create", True),
    (ApprovalRule(entities_actions=("customers.*",)), "DELETE", "/v1/customers/{id}", "customers.delete", True),
    (ApprovalRule(entities_actions=("*.delete",)), "DELETE", "/v1/x", "invoices.delete", True),
    (ApprovalRule(entities_actions=("customers.create",)), "POST", "/v1/customers", "customers.update", False),
    (ApprovalRule(entities_actions=("customers.create",)), "POST", "/v1/customers", None, False),  # not execute
    (ApprovalRule(methods=WRITES), "POST", "/v1/customers", "customers.create", True),  # execute by its method
])
def test_a_rule_parks_what_it_names(rule: ApprovalRule, method: str, path: str, action: str | None,
                                    parked: bool) -> None:
    assert approval.matches(rule, method=method, path=path, action=action) is parked


@pytest.mark.parametrize("spelling", ["/v1/%63harges", "/V1/Charges", "/v1/charges/", "/v1/%43HARGES/"])
def test_spelling_a_path_differently_does_not_avoid_the_rule(spelling: str) -> None:
    assert approval.matches(ApprovalRule(paths=("/v1/charges",)), method="GET", path=spelling)


def _parked(**changes: object) -> Parked:
    base = Parked(kind=approval.HTTP, method="POST", path="/v1/charges", destination="https://api.example.com/v1/charges",
                  target=Tail("v1/charges", "a=1"), headers=(("content-type", "application/json"),),
                  body=b'{"amount": 100}')
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"method": "PUT"}, {"destination": "https://api.example.com/v1/charges?a=2"},
    {"headers": (("content-type", "text/plain"),)}, {"headers": ()}, {"body": b'{"amount": 999}'}, {"body": None},
    {"kind": approval.EXECUTE}, {"call": {"entity": "charges", "action": "create"}},
])
def test_the_hash_covers_every_part_of_the_request(change: dict[str, object]) -> None:
    assert approval.request_hash(_parked(**change)) != approval.request_hash(_parked())


def test_the_hash_ignores_header_name_case_and_is_stable() -> None:
    assert approval.request_hash(_parked(headers=(("Content-Type", "application/json"),))) == \
        approval.request_hash(_parked())
    assert len(approval.request_hash(_parked())) == 64


@pytest.mark.parametrize("target", [Tail("v1/charges", "a=1&b=%20"), Url("https://api.example.com/v1/x?y=1"), None])
def test_a_parked_record_round_trips(target: Tail | Url | None) -> None:
    p = _parked(target=target, body=bytes(range(256)), call={"params": {"n": 1}} if target is None else None)
    again = Parked.decode(p.encode())
    assert again == p
    approval.check_hash(again, approval.request_hash(p))


def test_a_record_that_does_not_match_its_hash_is_refused() -> None:
    with pytest.raises(ApprovalMismatch):
        approval.check_hash(_parked(body=b"other"), approval.request_hash(_parked()))


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None), ("", None), ("wait=10", 10.0), ("respond-async, wait=5", 5.0), ("WAIT = 7", 7.0),
    ('wait="3"', 3.0), ("wait=abc", None), ("wait=-1", None), ("wait=1.5", None), ("handling=strict", None),
    ("wait=99999999", None),
])
def test_prefer_wait(header: str | None, seconds: float | None) -> None:
    assert approval.prefer_wait(header) == seconds


def test_a_parked_answer_is_recognised_only_in_its_exact_shape() -> None:
    assert approval.is_parked({"approval": {"id": "apv_1"}})
    assert not approval.is_parked({"status": "success", "result": {}, "approval": {}})
    assert not approval.is_parked({"status_code": 202, "body": {"approval": {}}})


def _source(url: str) -> Source:
    return Source(id="s1", workspace_id="w1", connector="http", name="s", slug="s", config={"upstream_url": url},
                  policy=Policy(), status="active", credential_fields=(), created_at=0, updated_at=0)


def test_an_approved_request_goes_only_where_it_was_parked_for() -> None:
    source = _source("https://api.example.com/v1")
    prep = build.prepare(source, {"api_key": {"value": "k-123456", "query_param": "key"}}, default_base_url=None)
    inbound = Inbound(door=Door.GATEWAY, method="POST", path="/x", authorization=None, source=BySlug("w1", "s"),
                      target=Tail("charges", "a=1&key=agent-sent"))
    bound = build.destination_url(inbound, prep)
    assert bound == "https://api.example.com/v1/charges?a=1"  # without anything keyrelay injects
    approval.check_destination(inbound, bound, source, prep, None)
    moved = _source("https://api.example.com/v2")
    with pytest.raises(DestinationChanged):
        approval.check_destination(inbound, bound, moved, build.prepare(moved, {}, default_base_url=None), None)
    execute = dataclasses.replace(inbound, target=None)
    assert approval.base_destination(source, None) == "https://api.example.com/v1"
    approval.check_destination(execute, "https://api.example.com/v1", source, prep, None)
    with pytest.raises(DestinationChanged):
        approval.check_destination(execute, "https://api.example.com/v1", moved, prep, None)


def test_views_never_show_the_body_or_header_values() -> None:
    from keyrelay.model import Approval, ApprovalStatus, CallerKind, SealedRecord

    a = Approval(id="apv_1", workspace_id="w", source_id="s", door="gateway", caller="key:1",
                 caller_kind=CallerKind.API_KEY.value, caller_scopes=frozenset(), method="POST", path="/p",
                 action=None, request_hash="0" * 64, request=SealedRecord("k", b"secret-body"), body_bytes=11,
                 status=ApprovalStatus.PENDING, created_at=0, expires_at=60)
    text = json.dumps([approval.approver_view(a), approval.agent_view(a, poll_url="/p", approval_url=None)])
    assert "secret-body" not in text and "body_bytes" in text


def test_a_sealed_records_context_names_its_approval_workspace_role_and_hash() -> None:
    """The vault binds a parked request's record to this context (tests/test_vault.py shows that changing any part
    refuses it), so every part must be in it: a record moved to another approval or workspace must not open."""
    h = "ab" * 32
    base = tuple(approval.context("apv_1", "ws-1", "request", h))
    assert base == ("approval", "apv_1", "ws-1", "request", h)
    others = [approval.context("apv_2", "ws-1", "request", h), approval.context("apv_1", "ws-2", "request", h),
              approval.context("apv_1", "ws-1", "response", h), approval.context("apv_1", "ws-1", "request", "cd" * 32)]
    assert len({base, *map(tuple, others)}) == 5

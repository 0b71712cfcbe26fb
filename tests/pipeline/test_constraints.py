"""Constraint sets: parsing (field-named refusals), matching, observe mode, attenuation never widening (a property
test over random parent/child sets and random requests)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyrelay.errors import InvalidRequest
from keyrelay.model import Constraints
from keyrelay.pipeline import constraints as cons
from keyrelay.pipeline.constraints import Ask

NOW = 1_000_000.0


def parse(data: dict[str, object]) -> Constraints:
    return cons.parse(data, budget_key="key:k", now=NOW)


def test_every_kind_parses_and_survives_storage() -> None:
    c = parse({"sources": ["stripe", "0000-id"], "methods": ["get", "HEAD"], "paths": ["/v1/customers/*"],
               "actions": ["customers.list", "invoices.*"], "expires_at": "2030-01-01T00:00:00Z",
               "budget": {"requests": 5, "per": "hour"}, "max_body_bytes": 1024, "mode": "observe"})
    assert c.methods == frozenset({"GET", "HEAD"}) and c.observe and c.budget is not None
    assert c.budget.key == "key:k" and c.budget.per == "hour"
    assert cons.load(cons.dump(c)) == c
    shown = cons.view(c)
    assert shown["expires_at"] == "2030-01-01T00:00:00Z" and shown["budget"] == {"requests": 5, "per": "hour"}
    assert shown["mode"] == "observe" and "key" not in str(shown["budget"])


def test_an_empty_object_constrains_nothing() -> None:
    c = parse({})
    assert c == Constraints() and cons.refusal(c, Ask(method="DELETE", path="/x", has_body=True)) is None


@pytest.mark.parametrize(("data", "field"), [
    ({"sourcez": []}, "constraints.sourcez"),
    ({"methods": ["GE T"]}, "constraints.methods"),
    ({"methods": "GET"}, "constraints.methods"),
    ({"paths": ["v1/x"]}, "constraints.paths"),
    ({"paths": ["/v1/x?y"]}, "constraints.paths"),
    ({"paths": ["/v1\\x"]}, "constraints.paths"),
    ({"paths": ["/v1/%zz"]}, "constraints.paths"),
    ({"actions": ["customers"]}, "constraints.actions"),
    ({"expires_at": "1970-01-02T00:00:00Z"}, "constraints.expires_at"),  # before NOW
    ({"expires_at": "1970-01-12T13:46:40Z"}, "constraints.expires_at"),  # exactly NOW: not in the future
    ({"expires_at": NOW}, "constraints.expires_at"),
    ({"expires_at": "2030-01-01T00:00:00"}, "constraints.expires_at"),
    ({"budget": {"requests": 0}}, "constraints.budget"),
    ({"budget": {"requests": 3, "per": "week"}}, "constraints.budget"),
    ({"budget": {"requests": True}}, "constraints.budget"),
    ({"max_body_bytes": -1}, "constraints.max_body_bytes"),
    ({"mode": "audit"}, "constraints.mode"),
    ({"sources": ["x"] * 65}, "constraints.sources"),
])
def test_bad_constraints_are_refused_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(data)
    assert err.value.field == field


def test_paths_are_matched_on_the_normalized_path() -> None:
    c = parse({"paths": ["/v1/customers/*", "/v1/%63harges/**"]})
    assert c.paths == ("/v1/customers/*", "/v1/charges/**")
    assert cons.normalize_path("/v1/%63ustomers/%2f") == "/v1/customers/%2F"
    ok = [("/v1/customers/cus_1"), ("/v1/%63ustomers/cus_1"), ("/v1/charges/ch_1/refunds")]
    bad = ["/v1/customers", "/v1/customers/cus_1/delete", "/v1/customersX/1", "/v2/charges/x", "/v1/charges"]
    for path in ok:
        assert cons.refusal(c, Ask(path=cons.normalize_path(path))) is None, path
    for path in bad:
        assert cons.refusal(c, Ask(path=cons.normalize_path(path))) == "paths", path


def test_each_kind_refuses_by_its_name() -> None:
    c = parse({"methods": ["GET"], "paths": ["/a"], "max_body_bytes": 10, "actions": ["customers.list"]})
    assert cons.refusal(c, Ask(method="POST")) == "methods"
    assert cons.refusal(c, Ask(path="/b")) == "paths"
    assert cons.refusal(c, Ask(has_body=True, body_length=11)) == "max_body_bytes"
    assert cons.refusal(c, Ask(has_body=True, body_length=None)) == "max_body_bytes"  # unknown length
    assert cons.refusal(c, Ask(has_body=True, body_length=10)) is None
    assert cons.refusal(c, Ask(action="customers.create")) == "actions"
    assert cons.refusal(c, Ask(action="customers.list")) is None
    wild = parse({"actions": ["customers.*"]})
    assert cons.action_ok(wild, "customers.delete") and not cons.action_ok(wild, "invoices.list")
    assert cons.source_ok(parse({"sources": ["stripe"]}), "id-1", "stripe")
    assert not cons.source_ok(parse({"sources": ["stripe"]}), "id-1", "github")
    assert cons.source_ok(parse({"sources": ["id-1"]}), "id-1", "github")


def test_an_observing_set_reports_but_does_not_refuse() -> None:
    observe = parse({"methods": ["GET"], "mode": "observe"})
    enforce = parse({"paths": ["/a"]})
    assert cons.judge([observe], lambda c: cons.refusal(c, Ask(method="POST"))) == (None, "methods")
    assert cons.judge([observe, enforce], lambda c: cons.refusal(c, Ask(method="POST", path="/b"))) == \
        ("paths", "methods")


def test_attenuation_is_bounded_in_depth() -> None:
    chain: tuple[Constraints, ...] = ()
    for _ in range(cons.MAX_DEPTH + 1):
        chain = cons.attenuate(chain, Constraints())
    with pytest.raises(InvalidRequest):
        cons.attenuate(chain, Constraints())


# --- attenuation never widens (property) -------------------------------------------------------------------------

SOURCES = ["s1", "s2", "stripe", "github"]
METHODS = ["GET", "POST", "DELETE", "PUT"]
SEGMENTS = ["v1", "customers", "charges", "x", "%63ustomers"]
ACTIONS = ["customers.list", "customers.get", "customers.create", "invoices.list"]


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:  # type: ignore[type-arg]
    return st.none() | strategy


paths_st = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3).map(lambda s: "/" + "/".join(s))
globs_st = st.lists(st.sampled_from([*SEGMENTS, "*", "**"]), min_size=0, max_size=3).map(lambda s: "/" + "/".join(s))
sets_st = st.builds(
    lambda sources, methods, paths, actions, body, observe, expires: {
        k: v for k, v in {"sources": sources, "methods": methods, "paths": paths, "actions": actions,
                          "max_body_bytes": body, "mode": "observe" if observe else None,
                          "expires_at": expires}.items() if v is not None},
    _maybe(st.lists(st.sampled_from(SOURCES), max_size=3)),
    _maybe(st.lists(st.sampled_from(METHODS), max_size=3)),
    _maybe(st.lists(globs_st, max_size=3)),
    _maybe(st.lists(st.sampled_from([*ACTIONS, "customers.*"]), max_size=3)),
    _maybe(st.integers(0, 100)),
    st.booleans(),
    _maybe(st.floats(NOW + 1, NOW + 10_000)),
)
asks_st = st.builds(
    lambda method, path, length, has_body, action: Ask(method=method, path=cons.normalize_path(path),
                                                       body_length=length, has_body=has_body, action=action),
    st.sampled_from(METHODS), paths_st, _maybe(st.integers(0, 200)), st.booleans(), _maybe(st.sampled_from(ACTIONS)),
)


@settings(max_examples=500, derandomize=bool(os.environ.get("CI")), deadline=None)
@given(parent_sets=st.lists(sets_st, min_size=0, max_size=3), child_set=sets_st, ask=asks_st,
       source=st.sampled_from(SOURCES), parent_expiry=_maybe(st.floats(NOW + 1, NOW + 10_000)),
       expires_in=_maybe(st.floats(1, 20_000)))
def test_a_child_never_accepts_what_its_parent_refuses(parent_sets: list[dict[str, object]],
                                                       child_set: dict[str, object], ask: Ask, source: str,
                                                       parent_expiry: float | None, expires_in: float | None) -> None:
    parent: tuple[Constraints, ...] = ()
    for i, data in enumerate(parent_sets):
        parent = cons.attenuate(parent, cons.parse(data, budget_key=f"drv:{i}", now=NOW))
    child_own = cons.parse(child_set, budget_key="drv:child", now=NOW)
    child = cons.attenuate(parent, child_own)
    if cons.accepts(child, ask, source_id=source, slug=source):
        assert cons.accepts(parent, ask, source_id=source, slug=source)
    parent_expires = cons.earliest(parent_expiry, cons.chain_expiry(parent))
    child_expires = cons.child_expiry(parent_expires, child_own, now=NOW, expires_in=expires_in)
    if parent_expires is not None:
        assert child_expires is not None and child_expires <= parent_expires
    assert cons.earliest(child_expires, cons.chain_expiry(child)) == cons.earliest(
        child_expires, cons.chain_expiry(parent), child_own.expires_at)


@settings(max_examples=400, derandomize=bool(os.environ.get("CI")), deadline=None)
@given(globs=st.lists(globs_st, max_size=4), path=paths_st)
def test_a_path_list_matches_exactly_when_one_of_its_globs_does(globs: list[str], path: str) -> None:
    """The list is one compiled alternation: it must agree with matching each glob alone, where `*` is one
    segment (no '/') and `**` any rest."""

    def alone(glob: str) -> bool:
        rx = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p)
                     for p in re.split(r"(\*\*|\*)", glob))
        return re.fullmatch(rx, path) is not None

    assert cons.path_matches(globs, path) == any(alone(g) for g in globs)
    assert not cons.path_matches([], path)

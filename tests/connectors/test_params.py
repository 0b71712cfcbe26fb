"""Typed parameters: validation and placement into path, query and body."""

from __future__ import annotations

import pytest

from keyrelay.connectors.definition import Action, Param
from keyrelay.connectors.params import check_params, place
from keyrelay.errors import Unprocessable

ACT = Action(name="get", method="GET", path="/v1/things/{id}", description="", record="", params={
    "id": Param("id", "string", "the id", required=True, location="path"),
    "expand": Param("expand", "array", "what to expand"),
    "limit": Param("limit", "integer", "page size", minimum=1, maximum=100),
    "created_gte": Param("created_gte", "integer", "since", wire_name="created[gte]"),
    "kind": Param("kind", "string", "a kind", enum=("a", "b")),
})


def test_path_values_are_one_encoded_segment() -> None:
    placed = place(ACT, check_params(ACT, {"id": "../../admin?x=1#", "limit": "5", "created_gte": 3}))
    assert placed.path == "/v1/things/..%2F..%2Fadmin%3Fx%3D1%23"
    assert ("limit", "5") in placed.query and ("created[gte]", "3") in placed.query


@pytest.mark.parametrize("given,field", [
    ({}, "params.id"), ({"id": 5}, "params.id"), ({"id": "x", "limit": 0}, "params.limit"),
    ({"id": "x", "limit": True}, "params.limit"), ({"id": "x", "kind": "c"}, "params.kind"),
    ({"id": "x", "other": 1}, "params.other"), ({"id": "x" * 9000}, "params.id"),
])
def test_bad_params_are_named(given: dict[str, object], field: str) -> None:
    with pytest.raises(Unprocessable) as err:
        check_params(ACT, given)
    assert err.value.field == field


def test_objects_in_the_query_are_bracketed_and_in_none_params_are_never_sent() -> None:
    act = Action(name="list", method="GET", path="/v1/things", description="", records="data", params={
        "created": Param("created", "object", "a range"),
        "limit": Param("limit", "integer", "ignored page size", location="none"),
        "owner": Param("owner", "string", "an owner", default="{owner}"),
    })
    values = check_params(act, {"created": {"gte": 1, "lt": 5, "lte": None}, "limit": 1}, config={"owner": "acme"})
    placed = place(act, values)
    assert placed.query == [("created[gte]", "1"), ("created[lt]", "5"), ("owner", "acme")]
    assert placed.body == {}


def test_dotted_body_names_nest() -> None:
    act = Action(name="create", method="PUT", path="/t", description="", record="", params={
        "body": Param("body", "string", "text", location="body", wire_name="ticket.comment.body"),
        "public": Param("public", "boolean", "visible", location="body", wire_name="ticket.comment.public"),
    })
    placed = place(act, check_params(act, {"body": "hi", "public": False}))
    assert placed.body == {"ticket": {"comment": {"body": "hi", "public": False}}}


def test_arrays_in_the_query_are_comma_joined_or_exploded_and_one_value_becomes_a_list() -> None:
    act = Action(name="list", method="GET", path="/p", description="", records="values", params={
        "keys": Param("keys", "array", "project keys", explode=True),
        "ids": Param("ids", "array", "product ids", explode=True, wire_name="ids[]"),
        "expand": Param("expand", "array", "what to expand"),
        "type": Param("type", "array", "field types", explode=True, enum=("system", "custom")),
    })
    placed = place(act, check_params(act, {"keys": ["PA", "PB"], "ids": ["prod_1", "prod_2"],
                                           "expand": ["lead", "issueTypes"], "type": "custom"}))
    assert placed.query == [("keys", "PA"), ("keys", "PB"), ("ids[]", "prod_1"), ("ids[]", "prod_2"),
                            ("expand", "lead,issueTypes"), ("type", "custom")]
    with pytest.raises(Unprocessable) as err:
        check_params(act, {"type": ["custom", "other"]})
    assert err.value.field == "params.type"


def test_zendesk_comment_as_a_whole_ticket_object_or_as_fields_merged_into_it() -> None:
    from keyrelay.connectors.spec import load_catalog

    act = load_catalog()["zendesk-support"].entities["ticket_comments"].actions["create"]
    whole = place(act, check_params(act, {"ticket_id": 7, "ticket": {"comment": {"body": "On it"}}}))
    assert whole.path == "/tickets/7.json" and whole.body == {"ticket": {"comment": {"body": "On it"}}}
    merged = place(act, check_params(act, {"ticket_id": 7, "ticket": {"status": "pending"}, "body": "Hi",
                                           "public": False}))
    assert merged.body == {"ticket": {"status": "pending", "comment": {"body": "Hi", "public": False}}}

"""Declarative entities and actions (connectors/definition.py): what a definition's YAML turns into, with its
defaults (where a parameter goes, pagination, which actions write)."""

from __future__ import annotations

from keyrelay.connectors.definition import WRITE_ACTIONS, Pagination, parse_entities

RAW = {
    "customers": {
        "description": "People who pay.",
        "stream": False,
        "actions": {
            "list": {"method": "GET", "path": "/v1/customers", "records": "data",
                     "params": {"limit": {"type": "integer", "description": "Page size", "maximum": 100},
                                "email": {"type": "string", "description": "Filter", "name": "email_address"}},
                     "pagination": {"type": "cursor", "param": "starting_after", "next": "last:id",
                                    "has_more": "has_more"}},
            "create": {"method": "POST", "path": "/v1/customers",
                       "params": {"name": {"type": "string", "description": "Name", "required": True},
                                  "id": {"type": "string", "description": "Id", "in": "path"}}},
            "search": {"method": "POST", "path": "/v1/customers/search", "read_only": True, "record": ""},
            "archive": {"method": "POST", "path": "/v1/customers/{id}/archive"},
        },
    },
}


def test_parameters_default_to_the_query_for_reads_and_the_body_for_writes() -> None:
    ent = parse_entities(RAW)["customers"]
    assert ent.description == "People who pay." and ent.stream is False and ent.schema == {}
    listing, create = ent.actions["list"], ent.actions["create"]
    assert listing.params["limit"].location == "query" and listing.params["limit"].maximum == 100
    assert listing.params["email"].upstream == "email_address" and listing.params["limit"].upstream == "limit"
    assert create.params["name"].location == "body" and create.params["name"].required
    assert create.params["id"].location == "path"


def test_pagination_is_filled_in_with_defaults() -> None:
    actions = parse_entities(RAW)["customers"].actions
    pag = actions["list"].pagination
    assert (pag.type, pag.param, pag.next, pag.default_size, pag.max_size, pag.location) == (
        "cursor", "starting_after", "last:id", 25, 100, "query")
    assert actions["create"].pagination == Pagination()


def test_which_actions_write_and_which_return_collections() -> None:
    actions = parse_entities(RAW)["customers"].actions
    assert actions["list"].is_collection and not actions["search"].is_collection
    assert "create" in WRITE_ACTIONS and actions["create"].is_write and not actions["list"].is_write
    assert not actions["search"].is_write  # POST, but declared read-only
    assert not actions["archive"].is_write  # not a write by name, and not declared one: read-only by default
    assert parse_entities({}) == {}

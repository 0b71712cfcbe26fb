"""The machine-readable entity description matches the definitions it is built from."""

from __future__ import annotations

from typing import Any

import pytest

from keyrelay.connectors import describe
from keyrelay.connectors.spec import load_catalog

CATALOG = load_catalog()
API = sorted(name for name, spec in CATALOG.items() if spec.entities)


def _action(connector: str, entity: str, action: str) -> dict[str, Any]:
    ent = next(e for e in describe.entities(CATALOG[connector]) if e["name"] == entity)
    return next(a for a in ent["actions"] if a["name"] == action)


def test_stripe_customers_list_pages_by_starting_after() -> None:
    act = _action("stripe", "customers", "list")
    assert act["collection"] is True and act["writes"] is False
    assert act["pagination"] == {"type": "cursor", "page_param": "starting_after", "size_param": "limit",
                                 "default_size": 10, "max_size": 100, "start": 0}
    params = {p["name"]: p for p in act["params"]}
    assert params["created_gte"]["type"] == "integer" and params["created_gte"]["filter"] is True
    assert params["limit"] == {"name": "limit", "type": "integer", "required": False, "filter": False,
                               "minimum": 1, "maximum": 100, "description": params["limit"]["description"]}


def test_page_params_use_the_name_agents_send() -> None:
    """GitHub's cursor travels as the GraphQL variable `variables.after`; agents send it as `after`."""
    assert _action("github", "issues", "list")["pagination"]["page_param"] == "after"
    assert _action("jira", "projects", "list")["pagination"]["type"] == "offset"


def test_single_object_and_write_actions() -> None:
    get = _action("stripe", "customers", "get")
    assert get["collection"] is False and get["pagination"] is None
    assert [(p["name"], p["type"], p["required"]) for p in get["params"]] == [("id", "string", True)]
    assert _action("stripe", "customers", "create")["writes"] is True


@pytest.mark.parametrize("name", API)
def test_every_page_param_is_one_of_the_actions_params(name: str) -> None:
    for ent in describe.entities(CATALOG[name]):
        for act in ent["actions"]:
            names = {p["name"] for p in act["params"]}
            pag = act["pagination"]
            if pag is None:
                continue
            if pag["type"] in ("cursor", "offset", "page_number"):
                assert pag["page_param"] in names, f"{name}.{ent['name']}.{act['name']}"
            if pag["size_param"] is not None:
                assert pag["size_param"] in names


def test_entities_without_list_are_not_streams() -> None:
    ents = {e["name"]: e for e in describe.entities(CATALOG["stripe"])}
    assert ents["customers"]["stream"] is True and ents["balance"]["stream"] is False

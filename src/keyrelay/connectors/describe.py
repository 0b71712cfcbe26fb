"""A connector's entities, actions and params as data, for clients that build calls from the catalog.

Served at `GET /api/v1/connectors/{name}/entities`. The Python SDK builds its connector facades from it
(`kr.connector("stripe", workspace=...)`): the param names and types it checks before a call, and how it pages a
collection with execute (`pagination.page_param` is the param that takes `connector_metadata.next_cursor`, an
offset or a page number). Everything here comes from the definition; nothing depends on a source.
"""

from __future__ import annotations

from typing import Any

from keyrelay.connectors.definition import Action, Entity, Param
from keyrelay.connectors.spec import ConnectorSpec


def entities(spec: ConnectorSpec) -> list[dict[str, Any]]:
    return [entity(ent) for ent in spec.entities.values()]


def entity(ent: Entity) -> dict[str, Any]:
    return {"name": ent.name, "description": ent.description, "stream": ent.stream and "list" in ent.actions,
            "actions": [action(act) for act in ent.actions.values()]}


def action(act: Action) -> dict[str, Any]:
    return {"name": act.name, "description": act.description, "writes": act.is_write,
            "collection": act.is_collection, "params": [param(p) for p in act.params.values()],
            "pagination": pagination(act) if act.is_collection else None}


def param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "type": p.type, "description": p.description, "required": p.required,
                           "filter": p.filter}
    optional = {"enum": None if p.enum is None else list(p.enum), "minimum": p.minimum, "maximum": p.maximum,
                "default": p.default}
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def pagination(act: Action) -> dict[str, Any]:
    """How a caller pages this collection through execute.

    `page_param` (the param named the way agents send it) takes, for `cursor`, `connector_metadata.next_cursor`
    of the previous page (absent or null on the last page); for `offset`, the previous offset plus the number of
    records; for `page_number`, the previous page plus one, starting at `start`. `link_header` and `next_url`
    have no page param: only the stream query follows them (its `next_page_token`).
    """
    pag = act.pagination
    return {"type": pag.type, "page_param": _agent_name(act, pag.param), "size_param": _agent_name(act, pag.size_param),
            "default_size": pag.default_size, "max_size": pag.max_size, "start": pag.start}


def _agent_name(act: Action, upstream: str) -> str | None:
    if not upstream:
        return None
    return next((p.name for p in act.params.values() if p.upstream == upstream), None)

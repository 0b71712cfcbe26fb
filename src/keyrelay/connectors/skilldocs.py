"""Agent-readable documentation ("skill docs") built from OUR connector definitions.

The Airbyte-compatible door serves these at `GET /api/v1/skills/docs?id=&section=` (docs/airbyte.md):
a document `{id, section_id?, metadata, outline, content}` whose content is a list of blocks (heading, paragraph,
list, code, table). Everything here comes from the definition: entities, actions, params, descriptions.
"""

from __future__ import annotations

import json
from typing import Any

from keyrelay.connectors.definition import Action, Entity, Param
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import Unprocessable

PREFIX = "connector:"
OVERVIEW = "overview"


def docs_id(spec: ConnectorSpec) -> str:
    return PREFIX + spec.name


def connector_name(skill_id: str) -> str | None:
    """The connector a docs id names, or None if the id is not one of ours."""
    return skill_id[len(PREFIX):] if skill_id.startswith(PREFIX) else None


def _heading(text: str, level: int = 2) -> dict[str, Any]:
    return {"type": "heading", "level": level, "text": text}


def _para(text: str) -> dict[str, Any]:
    return {"type": "paragraph", "text": text}


def outline(spec: ConnectorSpec) -> list[dict[str, str]]:
    out = [{"id": OVERVIEW, "title": "Overview", "summary": "How to call this connector; its entities and actions."}]
    for ent in spec.entities.values():
        out.append({"id": f"entity:{ent.name}", "title": ent.name,
                    "summary": f"{ent.description} Actions: {', '.join(ent.actions)}."})
    return out


def build(spec: ConnectorSpec, section: str | None = None, *, warnings: list[str] | None = None) -> dict[str, Any]:
    """The whole document (overview plus every entity), or one section of it; unknown section -> 422."""
    sections = {s["id"] for s in outline(spec)}
    if section is not None and section not in sections:
        raise Unprocessable(f"Unknown section '{section}'; valid sections: {', '.join(sorted(sections))}",
                            field="section")
    if section is None:
        content = _overview(spec)
        for ent in spec.entities.values():
            content += _entity(ent)
    elif section == OVERVIEW:
        content = _overview(spec)
    else:
        content = _entity(spec.entities[section.removeprefix("entity:")])
    doc: dict[str, Any] = {
        "id": docs_id(spec),
        "metadata": {"id": docs_id(spec), "title": f"{spec.title} connector", "kind": "connector",
                     "summary": spec.description, "warnings": list(warnings or [])},
        "outline": outline(spec), "content": content,
    }
    if section is not None:
        doc["section_id"] = section
    return doc


def _overview(spec: ConnectorSpec) -> list[dict[str, Any]]:
    rows = [[ent.name, ", ".join(ent.actions), ent.description] for ent in spec.entities.values()]
    return [
        _heading(spec.title, 1),
        _para(spec.description),
        _para("Call an action with execute(entity, action, params). Parameter names are the ones listed for each "
              "action; unknown parameters are ignored. Collection actions (list, search) return an array of records "
              "and put paging facts in connector_metadata; other actions return one object. Read an entity's "
              "section (id entity:<name>) for its parameters."),
        {"type": "table", "headers": ["Entity", "Actions", "Description"], "rows": rows},
        {"type": "list", "items": [
            "Writes (create, update, delete) work only if the source's policy allows writes.",
            "select_fields / exclude_fields take dot paths; select_fields wins when both are given.",
            "With skip_truncation false, strings longer than 200 characters in list results are cut: "
            "use get with the record id for the full value.",
        ]},
    ]


def _entity(ent: Entity) -> list[dict[str, Any]]:
    blocks = [_heading(ent.name, 2), _para(ent.description)]
    for act in ent.actions.values():
        blocks += _action(ent, act)
    return blocks


def _action(ent: Entity, act: Action) -> list[dict[str, Any]]:
    text = act.description or f"{act.name} {ent.name}."
    if act.is_write:
        text += " This is a write: the source's policy must allow writes."
    blocks = [_heading(f"{ent.name}.{act.name}", 3), _para(text)]
    if act.params:
        blocks.append({"type": "table", "headers": ["Parameter", "Type", "Required", "Description"],
                       "rows": [[p.name, p.type, "yes" if p.required else "no", _describe(p)]
                                for p in act.params.values()]})
    else:
        blocks.append(_para("No parameters."))
    paging = _paging(act)
    if paging:
        blocks.append(_para(paging))
    example = {"entity": ent.name, "action": act.name,
               "params": {p.name: f"<{p.type}>" for p in act.params.values() if p.required}}
    blocks.append({"type": "code", "language": "json", "code": json.dumps(example, indent=2)})
    return blocks


def _describe(p: Param) -> str:
    parts = [p.description]
    if p.enum is not None:
        parts.append("One of: " + ", ".join(map(str, p.enum)) + ".")
    if p.minimum is not None or p.maximum is not None:
        parts.append(f"Range: {_num(p.minimum)} to {_num(p.maximum)}.")
    if p.default is not None:
        default = p.default
        if isinstance(default, str) and default.startswith("{") and default.endswith("}"):
            parts.append(f"Defaults to the source's configured {default[1:-1]}.")
        else:
            parts.append(f"Default: {json.dumps(default)}.")
    return " ".join(parts)


def _num(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else str(value)


def _paging(act: Action) -> str:
    if not act.is_collection:
        return ""
    pag = act.pagination
    keys = [*act.metadata, *(["next_cursor"] if pag.type == "cursor" and "next_cursor" not in act.metadata else [])]
    meta = ", ".join(keys) or "(none)"
    text = f"Returns an array of records; connector_metadata keys: {meta}."
    cursor, size = _agent_name(act, pag.param), _agent_name(act, pag.size_param)
    if pag.type == "cursor" and cursor:
        key = next((k for k, path in act.metadata.items() if path == pag.next), "next_cursor")
        text += f" Next page: pass connector_metadata.{key} as the parameter {cursor}."
    elif pag.type == "offset" and cursor:
        text += f" Next page: increase the parameter {cursor} by the page size."
    elif pag.type == "page_number" and cursor:
        text += f" Next page: increase the parameter {cursor} by one."
    if size:
        text += f" Page size: {size} (default {pag.default_size}, at most {pag.max_size})."
    return text


def _agent_name(act: Action, upstream: str) -> str:
    """The parameter agents send for an upstream name (e.g. `after` for GraphQL's `variables.after`)."""
    if not upstream:
        return ""
    return next((p.name for p in act.params.values() if p.upstream == upstream), "")

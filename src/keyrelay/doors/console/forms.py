"""HTML forms generated from JSON schemas: the connector catalog's config and credentials schemas, and the
source policy's schema. `fields()` describes the inputs of a schema; `parse()` turns a submitted form back into
the JSON object the services validate (they remain the judges: this only converts text to JSON types).

Credentials are write-only: their inputs are never given a value, and errors never echo one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyrelay.errors import InvalidRequest

# credential fields that name or configure, rather than hold, a secret: shown as plain text inputs
PLAIN_CREDENTIALS = frozenset({"username", "email", "header", "query_param", "prefix", "token_url", "scope",
                               "audience", "access_key_id", "client_id", "grant_type", "auth_method"})
_WORDS = {"url": "URL", "id": "ID", "api": "API", "json": "JSON", "ttl": "TTL", "sas": "SAS", "oauth2": "OAuth2"}
_INT = re.compile(r"-?\d{1,18}")
_NUMBER = re.compile(r"-?\d{1,18}(\.\d{1,9})?")


@dataclass(frozen=True)
class Field:
    name: str  # the input's name: "<prefix>.<property>[.<property>]"
    key: str  # the property name in the schema
    label: str
    kind: str  # text | secret | textarea | integer | number | checkbox | select | checkboxes | list | map
    required: bool
    hint: str = ""
    value: str = ""  # the current value as text (never for credentials)
    checked: frozenset[str] = frozenset()  # for checkbox (the field's name) and checkboxes
    options: tuple[str, ...] = ()
    secret: bool = False  # a credential input: never given a value
    nullable: bool = True  # the schema allows null (or leaving it out means nothing)
    default: Any = None  # the schema's default, what an emptied input of a non-nullable field stands for

    @property
    def blank(self) -> bool:
        """Whether a select offers "(not set)": not for a field that always has a value (e.g. an enum with a
        default that null would not pass), nor for a required one."""
        return not self.required and (self.secret or self.nullable or self.default is None)


@dataclass(frozen=True)
class Group:
    key: str  # "" for the schema's own properties, else the nested object's property name
    title: str
    hint: str
    optional: bool  # a nested object that may be left out entirely
    fields: tuple[Field, ...]
    nullable: bool = False  # the nested object may be null (a policy's `approval`: cleared by emptying its inputs)


def label(key: str) -> str:
    words = [_WORDS.get(w, w) for w in key.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The schema behind `$ref`s and `anyOf` (pydantic's optional fields), and whether null is allowed."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        merged = {**root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}),
                  **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, root)
    options = schema.get("anyOf")
    if isinstance(options, list):
        kinds = [o for o in options if o.get("type") != "null"]
        nullable = len(kinds) < len(options)
        if len(kinds) == 1 or (kinds and all(o.get("type") in ("number", "integer") for o in kinds)):
            inner, _ = _resolve(kinds[0] if len(kinds) == 1 else {"type": "number"}, root)
            extra = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**inner, **extra}, nullable
    types = schema.get("type")
    if isinstance(types, list):
        kinds = [t for t in types if t != "null"]
        return {**schema, "type": kinds[0] if kinds else "string"}, len(kinds) < len(types)
    return schema, False


def _kind(key: str, schema: Mapping[str, Any], *, secret: bool,
          choices: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    kind = schema.get("type")
    if choices is not None:
        return ("checkboxes" if kind == "array" else "select"), tuple(choices)
    if "enum" in schema:
        return "select", tuple(str(v) for v in schema["enum"])
    if kind == "boolean":
        return "checkbox", ()
    if kind in ("integer", "number"):
        return str(kind), ()
    if kind == "array":
        items = schema.get("items") or {}
        if "enum" in items:
            return "checkboxes", tuple(str(v) for v in items["enum"])
        return "list", ()
    if kind == "object":
        return "map", ()
    if secret and key not in PLAIN_CREDENTIALS:
        return ("textarea" if "json" in key else "secret"), ()
    return "text", ()


def _text(value: Any, kind: str) -> tuple[str, frozenset[str]]:
    if value is None:
        return "", frozenset()
    if kind == "checkbox":
        return "", frozenset({"on"}) if value else frozenset()
    if kind == "checkboxes":
        return "", frozenset(str(v) for v in value)
    if kind == "list":
        return ", ".join(str(v) for v in value), frozenset()
    if kind == "map":
        return "\n".join(f"{k}: {v}" for k, v in dict(value).items()), frozenset()
    return str(value), frozenset()


def _field(name: str, key: str, schema: Mapping[str, Any], root: Mapping[str, Any], *, required: bool, secret: bool,
           value: Any, choices: Mapping[str, Sequence[str]], hints: Mapping[str, str], path: str = "") -> Field:
    """`path` is the dotted property path of a nested field ("approval.methods"): its choices and hint are looked
    up by that path first, then by the property name."""
    resolved, nullable = _resolve(schema, root)
    picked = choices.get(path) if path in choices else choices.get(key)
    kind, options = _kind(key, resolved, secret=secret, choices=picked)
    text, checked = ("", frozenset()) if secret else _text(value, kind)
    hint = hints.get(path) or hints.get(key) or str(resolved.get("description") or "")
    if kind == "map":
        hint = (hint + " " if hint else "") + "One `Name: value` per line."
    elif kind == "list":
        hint = (hint + " " if hint else "") + "Comma-separated."
    return Field(name=name, key=key, label=label(key),
                 kind=kind, required=required, hint=hint.strip(), value=text, checked=checked, options=options,
                 secret=secret, nullable=nullable or "default" not in resolved, default=resolved.get("default"))


def fields(schema: Mapping[str, Any], prefix: str, *, values: Mapping[str, Any] | None = None, secret: bool = False,
           choices: Mapping[str, Sequence[str]] | None = None, hints: Mapping[str, str] | None = None) -> list[Group]:
    """The inputs for `schema`'s properties, top-level ones first, then one group per nested object."""
    values = {} if secret or values is None else values
    choices, hints = choices or {}, hints or {}
    required = set(schema.get("required") or ())
    top: list[Field] = []
    nested: list[Group] = []
    for key, prop in (schema.get("properties") or {}).items():
        resolved, nullable = _resolve(prop, schema)
        if resolved.get("type") == "object" and "properties" in resolved:
            sub_required = [k for k in resolved.get("properties") or {} if k in set(resolved.get("required") or ())]
            optional = key not in required
            sub_values = values.get(key) or {}
            group_fields = tuple(  # inside a group that may be left out, nothing is required by the browser
                _field(f"{prefix}.{key}.{k}", k, p, schema, required=k in sub_required and not optional,
                       secret=secret, value=sub_values.get(k), choices=choices,
                       hints=hints, path=f"{key}.{k}")
                for k, p in (resolved.get("properties") or {}).items())
            hint = hints.get(key) or str(resolved.get("description") or "")
            if optional and sub_required:
                hint = f"{hint} If used, it needs {', '.join(f'`{k}`' for k in sub_required)}.".strip()
            nested.append(Group(key=key, title=label(key), hint=hint, optional=optional, fields=group_fields,
                                nullable=nullable))
            continue
        top.append(_field(f"{prefix}.{key}", key, prop, schema, required=key in required, secret=secret,
                          value=values.get(key, _default(resolved)), choices=choices, hints=hints))
    groups = [Group(key="", title="", hint="", optional=False, fields=tuple(top))] if top else []
    return groups + nested


def _default(schema: Mapping[str, Any]) -> Any:
    return schema.get("default")


def parse(schema: Mapping[str, Any], prefix: str, form: Mapping[str, Sequence[str]], *, nulls: bool = False,
          choices: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The JSON object a submitted form describes. Empty inputs are left out; a nested object whose inputs are all
    empty is left out.

    With `nulls` (a policy, where an emptied input means "back to no limit"), an emptied top-level input is sent as
    null when the schema allows null, else as the schema's default; and a nullable nested object whose inputs are
    all empty or at their defaults is sent as null (cleared)."""
    out: dict[str, Any] = {}
    for group in fields(schema, prefix, choices=choices):
        target = out if not group.key else {}
        for f in group.fields:
            raw = form.get(f.name) or []
            value = _convert(f, raw)
            if value is not None:
                target[f.key] = value
            elif nulls and not group.key and f.kind not in ("checkbox",):
                if f.nullable:
                    target[f.key] = None
                elif f.default is not None:
                    target[f.key] = f.default
        if not group.key:
            continue
        defaults = {f.key: f.default for f in group.fields}
        if nulls and group.nullable and all(v == defaults[k] for k, v in target.items()):
            out[group.key] = None
        elif target:
            out[group.key] = target
    return out


def _convert(f: Field, raw: Sequence[str]) -> Any:
    first = raw[0].strip() if raw else ""
    if f.kind == "checkbox":
        return bool(raw and raw[0])
    if f.kind == "checkboxes":
        picked = [v for v in raw if v in f.options] if f.options else list(raw)
        return picked or None
    if not first:
        return None
    if f.kind == "integer":
        if not _INT.fullmatch(first):
            raise InvalidRequest(f"{f.label} must be a whole number", field=f.name)
        return int(first)
    if f.kind == "number":
        if not _NUMBER.fullmatch(first):
            raise InvalidRequest(f"{f.label} must be a number", field=f.name)
        return int(first) if _INT.fullmatch(first) else float(first)
    if f.kind == "list":
        return [v.strip() for v in re.split(r"[,\n]", first) if v.strip()] or None
    if f.kind == "map":
        return _map(f, raw[0])
    return first


def _map(f: Field, text: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise InvalidRequest(f"{f.label}: line {n} is not of the form `Name: value`", field=f.name)
        out[name.strip()] = value.strip()
    return out or None

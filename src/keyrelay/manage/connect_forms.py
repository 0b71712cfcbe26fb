"""The connect page's forms, generated from a connector's config and credentials JSON schemas (docs/connect.md).

Credential fields are password inputs (a few that name an account, such as `email`, are plain inputs) and are
never filled back in. Config fields the operator preset, and the ones that say where requests go
(`base_url`, ...), are not offered. Submitted values are read back into config and credentials, typed by the
schema; the schemas themselves are applied when the source is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import InvalidRequest
from keyrelay.manage.connect import OPERATOR_ONLY_CONFIG

NOT_SECRET = frozenset({"username", "email", "client_id", "login", "account"})
MAX_VALUE = 16384
_ACRONYMS = {"api": "API", "url": "URL", "id": "ID", "oauth": "OAuth", "jql": "JQL"}


@dataclass(frozen=True)
class FormField:
    section: str  # config | credentials
    key: str
    label: str
    input: str  # text | password | email | number | select | checkbox
    required: bool
    help: str = ""
    options: tuple[str, ...] = ()
    value: str = ""  # prefilled (config fields only)
    pattern: str | None = None
    max_length: int | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def secret(self) -> bool:
        return self.input == "password"


def label(key: str, prop: Mapping[str, Any]) -> str:
    title = prop.get("title")
    if isinstance(title, str) and title:
        return title
    words = [_ACRONYMS.get(w, w) for w in key.replace("-", "_").split("_") if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _field(section: str, key: str, prop: Mapping[str, Any], *, required: bool, value: Any = None) -> FormField | None:
    kind = prop.get("type")
    options = prop.get("enum")
    help_text = str(prop.get("description") or "").strip()
    pattern = prop.get("pattern") if isinstance(prop.get("pattern"), str) else None
    max_length = prop.get("maxLength") if isinstance(prop.get("maxLength"), int) else None
    shown = "" if section == "credentials" or value is None else str(value)
    if isinstance(options, list) and all(isinstance(o, str | int) for o in options):
        return FormField(section, key, label(key, prop), "select", required, help_text,
                         tuple(str(o) for o in options), shown)
    if kind == "boolean":
        return FormField(section, key, label(key, prop), "checkbox", False, help_text,
                         value="on" if value is True else "")
    if kind in ("integer", "number"):
        return FormField(section, key, label(key, prop), "number", required, help_text, value=shown)
    if kind != "string":
        return None  # objects and arrays have no form input
    if section == "credentials":
        visible = key in NOT_SECRET or prop.get("format") == "email"
        kind_of = ("email" if "email" in key or prop.get("format") == "email" else "text") if visible else "password"
        return FormField(section, key, label(key, prop), kind_of, required, help_text, max_length=max_length)
    return FormField(section, key, label(key, prop), "text", required, help_text, value=shown, pattern=pattern,
                     max_length=max_length)


def _required_config(schema: Mapping[str, Any], editable: set[str], preset: set[str]) -> set[str]:
    """`required`, plus the one `anyOf` alternative the customer can satisfy when the others need operator-only
    fields (Jira: `subdomain`, unless the operator preset `base_url`)."""
    need = set(schema.get("required") or ())
    alternatives = [set(b.get("required") or ()) for b in schema.get("anyOf") or () if isinstance(b, Mapping)]
    if alternatives and not any(a <= preset for a in alternatives):
        usable = [a for a in alternatives if a <= editable | preset]
        if len(usable) == 1:
            need |= usable[0]
    return need - preset


def config_fields(spec: ConnectorSpec, *, preset: Mapping[str, Any], current: Mapping[str, Any],
                  only: Sequence[str] | None = None) -> list[FormField] | None:
    """The config fields the customer fills in (None if one of them cannot be a form input)."""
    schema = spec.config_schema
    props: Mapping[str, Any] = schema.get("properties") or {}
    editable = {k for k in props if k not in OPERATOR_ONLY_CONFIG and k not in preset}
    if only is not None:
        editable &= set(only)
    need = _required_config(schema, editable, set(preset))
    out = []
    for key in props:
        if key not in editable:
            continue
        made = _field("config", key, props[key], required=key in need, value=current.get(key))
        if made is None:
            if key in need:
                return None
            continue
        out.append(made)
    return out


def credential_fields(spec: ConnectorSpec) -> list[FormField] | None:
    schema = spec.credentials_schema
    props: Mapping[str, Any] = schema.get("properties") or {}
    need = set(schema.get("required") or ())
    out = []
    for key, prop in props.items():
        made = _field("credentials", key, prop, required=key in need)
        if made is None:
            if key in need:
                return None
            continue
        out.append(made)
    return out or None


def read(fields: Sequence[FormField], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, credentials) from a submitted form. Empty optional inputs are left out; an unparsable number
    or a missing required input is an InvalidRequest naming the field (never its value)."""
    config: dict[str, Any] = {}
    credentials: dict[str, Any] = {}
    for f in fields:
        raw = form.get(f.name, "")
        if len(raw) > MAX_VALUE:
            raise InvalidRequest(f"{f.label} is too long", field=f.name)
        raw = raw.strip()
        target = config if f.section == "config" else credentials
        if f.input == "checkbox":
            target[f.key] = raw in ("on", "true", "1")
            continue
        if not raw:
            if f.required:
                raise InvalidRequest(f"{f.label} is required", field=f.name)
            continue
        if f.input == "number":
            try:
                target[f.key] = int(raw) if raw.lstrip("-").isdigit() else float(raw)
            except ValueError:
                raise InvalidRequest(f"{f.label} must be a number", field=f.name) from None
            continue
        if f.input == "select" and raw not in f.options:
            raise InvalidRequest(f"{f.label} must be one of the listed values", field=f.name)
        target[f.key] = raw
    return config, credentials

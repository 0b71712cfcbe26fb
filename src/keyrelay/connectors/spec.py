"""Connector definitions: load `catalog/*.yaml`, check their schemas, validate source config and credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from keyrelay.connectors.definition import DEFINITION_SCHEMA, Entity, parse_entities
from keyrelay.connectors.provider import OAUTH2_CREDENTIALS_SCHEMA
from keyrelay.errors import InvalidRequest
from keyrelay.pipeline.headers import DEFAULT_FORWARD, is_always_dropped

CATALOG_DIR = Path(__file__).parent / "catalog"


class SpecError(Exception):
    """A connector definition file is invalid (raised at load time, never at request time)."""


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    title: str
    kind: str
    description: str
    config_schema: Mapping[str, Any]
    credentials_schema: Mapping[str, Any]
    definition_id: str | None = None
    default_base_url: str | None = None
    auth: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # default upstream headers (docs/connectors.md)
    entities: Mapping[str, Entity] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_catalog_api(self) -> bool:
        """A declarative API connector (stripe, github, ...), as opposed to the generic `http` one."""
        return self.kind == "api" and self.name != "http"

    def check_config(self, data: Any) -> dict[str, Any]:
        """The validated config, with the `default` of each top-level property the caller left out."""
        config = _check(self.config_schema, data, "config")
        for name, prop in (self.config_schema.get("properties") or {}).items():
            if name not in config and isinstance(prop, Mapping) and "default" in prop:
                config[name] = prop["default"]
        return config

    def check_credentials(self, data: Any) -> dict[str, Any]:
        """The connector's own credential fields, or (for a connector that declares `oauth`) the `oauth2`
        credential a Connect authorization leaves (docs/connect.md)."""
        if self.raw.get("oauth") and isinstance(data, dict) and "oauth2" in data:
            return _check(OAUTH2_CREDENTIALS_SCHEMA, data, "credentials")
        return _check(self.credentials_schema, data, "credentials")

    def public(self) -> dict[str, Any]:
        """The catalog entry shown by `GET /api/v1/connectors`."""
        return {
            "name": self.name, "title": self.title, "kind": self.kind, "description": self.description,
            "definition_id": self.definition_id, "default_base_url": self.default_base_url,
            "config_schema": self.config_schema, "credentials_schema": self.credentials_schema,
        }


def check_json(schema: Mapping[str, Any], data: Any, where: str) -> dict[str, Any]:
    """Validate a JSON object against `schema`; the error names the field and the rule, never the value."""
    return _check(schema, data, where)


def _check(schema: Mapping[str, Any], data: Any, where: str) -> dict[str, Any]:
    if data is None:
        data = {}
    err = best_match(Draft202012Validator(schema).iter_errors(data))
    if err is not None:
        path = ".".join([where, *(str(p) for p in err.absolute_path)])
        # never echo a credential value: describe the rule that failed, not the instance
        detail = _describe(err.validator, err.validator_value, err.instance)
        raise InvalidRequest(f"Invalid {path}: {detail}", field=path)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where} must be an object", field=where)
    return data


def _describe(validator: Any, expected: Any, instance: Any) -> str:
    if validator == "required":
        missing = [str(k) for k in expected if not isinstance(instance, dict) or k not in instance]
        return f"missing required field(s) {', '.join(missing)}"
    if validator == "additionalProperties":
        return "unknown field(s); allowed: " + ", ".join(sorted(expected)) if isinstance(expected, dict) \
            else "unknown field(s)"
    if validator == "type":
        return f"must be of type {expected}"
    return f"fails the '{validator}' rule"


def load_spec(path: Path) -> ConnectorSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path.name}: must be a mapping")
    problem = best_match(Draft202012Validator(DEFINITION_SCHEMA).iter_errors(raw))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "(top level)"
        raise SpecError(f"{path.name}: {where}: {problem.message}")
    for name in raw.get("headers") or {}:
        if (low := name.lower()) == "content-type" or is_always_dropped(low) or low not in DEFAULT_FORWARD:
            raise SpecError(f"{path.name}: headers: {name!r} cannot be a default header (the engine sets "
                            "content-type; others must be request headers the pipeline forwards)")
    for key in ("config_schema", "credentials_schema"):
        try:
            Draft202012Validator.check_schema(raw[key])
        except Exception as exc:  # jsonschema.SchemaError and friends
            raise SpecError(f"{path.name}: {key} is not a valid JSON schema: {exc}") from None
    return ConnectorSpec(
        name=str(raw["name"]), title=str(raw["title"]), kind=str(raw["kind"]),
        description=str(raw.get("description", "")).strip(), config_schema=raw["config_schema"],
        credentials_schema=raw["credentials_schema"], definition_id=raw.get("definition_id"),
        default_base_url=raw.get("default_base_url"), auth=raw.get("auth") or {}, headers=raw.get("headers") or {},
        entities=parse_entities(raw.get("entities") or {}, raw.get("headers")), raw=raw,
    )


def load_catalog(directory: Path = CATALOG_DIR) -> dict[str, ConnectorSpec]:
    specs = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = load_spec(path)
        if spec.name in specs:
            raise SpecError(f"{path.name}: duplicate connector name {spec.name!r}")
        specs[spec.name] = spec
    return specs

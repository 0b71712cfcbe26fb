"""A guard over the catalog: every action keyrelay shares with Airbyte's Python clients (the unified
`airbyte-agent-sdk` and the per-connector `airbyte-agent-<name>` packages, test-only dependencies) takes the
param names those clients send and answers the metadata keys their typed results read (docs/airbyte.md).

It reads the clients' public operation models (entity, action, params, metadata fields): facts about the APIs.
An action only one side has is not checked; a param a client may send that keyrelay does not declare must be
one of the known gaps below, so a new mismatch fails here rather than as a 422 in an agent.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from keyrelay.connectors.definition import Action
from keyrelay.connectors.execute import ACTION_ALIASES
from keyrelay.connectors.spec import load_catalog

CATALOG = load_catalog()
MODULES = {"stripe": "stripe", "github": "github", "gong": "gong", "hubspot": "hubspot", "shopify": "shopify",
           "salesforce": "salesforce", "zendesk-support": "zendesk_support", "jira": "jira"}
_SF = ("AccountNumber", "AnnualRevenue", "BillingCity", "BillingCountry", "BillingPostalCode", "BillingState",
       "BillingStreet", "NumberOfEmployees", "ParentId", "Department", "Description", "MailingCity",
       "MailingCountry", "MailingPostalCode", "MailingState", "MailingStreet", "MobilePhone", "City", "Country",
       "Industry", "PostalCode", "Rating", "State", "Street", "Title", "Website", "CampaignId",
       "ForecastCategoryName", "LeadSource", "NextStep", "Type", "OwnerId", "Reason", "SuppliedCompany",
       "SuppliedEmail", "SuppliedName", "SuppliedPhone")
# optional params a client may send that keyrelay refuses (docs/airbyte.md: not offered), per connector
KNOWN_GAPS: dict[str, frozenset[str]] = {
    "github": frozenset({"fields"}),  # a GraphQL field selection
    "stripe": frozenset({"marketing_features", "package_dimensions"}),  # products create/update (unified SDK)
    "salesforce": frozenset(_SF),  # more writable fields on create/update (unified SDK)
}


@dataclass(frozen=True)
class Client:
    label: str  # "sdk" or "pkg"
    connector: str
    cls: Any
    model: Any
    models: Any


def _client(label: str, connector: str, base: str) -> Client | None:
    try:
        module = importlib.import_module(f"{base}.connector")
    except ImportError:  # e.g. no airbyte-agent-shopify package is published
        return None
    cls = next(c for _, c in inspect.getmembers(module, inspect.isclass)
               if c.__module__ == module.__name__ and hasattr(c, "_PARAM_MAP"))
    model_module = importlib.import_module(f"{base}.connector_model")
    model = next(v for k, v in vars(model_module).items() if k.endswith("ConnectorModel") and not isinstance(v, type))
    return Client(label, connector, cls, model, importlib.import_module(f"{base}.models"))


CLIENTS = [c for name, mod in MODULES.items()
           for c in (_client("sdk", name, f"airbyte_agent_sdk.connectors.{mod}"),
                     _client("pkg", name, f"airbyte_agent_{mod}")) if c is not None]


def _shared(client: Client) -> list[tuple[str, str, Any, Action]]:
    """(entity, action, their endpoint, our action) for every action both sides have."""
    spec = CATALOG[client.connector]
    out = []
    for ent in client.model.entities:
        for act, endpoint in ent.endpoints.items():
            name = str(getattr(act, "value", act))
            ours = spec.entities.get(ent.name)
            action = ours.actions.get(ACTION_ALIASES.get(name, name)) if ours is not None else None
            if action is not None:
                out.append((ent.name, name, endpoint, action))
    return out


def _sent(client: Client, entity: str, action: str, endpoint: Any) -> set[str]:
    names = set(client.cls._PARAM_MAP.get((entity, action), {}).values())
    return names | set(endpoint.query_params) | set(endpoint.path_params) | set(endpoint.body_fields)


def _required(endpoint: Any) -> set[str]:
    names = set(endpoint.path_params)
    names |= {k for k, v in (endpoint.query_params_schema or {}).items() if v.get("required")}
    return names | set((endpoint.request_schema or {}).get("required") or [])


def _types(endpoint: Any) -> dict[str, Any]:
    out = {k: v.get("type") for k, v in (endpoint.query_params_schema or {}).items()}
    out.update({k: v.get("type") for k, v in (endpoint.path_params_schema or {}).items()})
    out.update({k: v.get("type") for k, v in ((endpoint.request_schema or {}).get("properties") or {}).items()})
    return out


def _meta_fields(client: Client, entity: str, action: str) -> dict[str, str | None]:
    name = "".join(p.capitalize() for p in entity.split("_")) + action.capitalize() + "ResultMeta"
    meta = getattr(client.models, name, None)
    return {} if meta is None else {n: f.alias for n, f in meta.model_fields.items()}


def test_the_clients_are_installed() -> None:
    assert {(c.label, c.connector) for c in CLIENTS} == (
        {("sdk", n) for n in MODULES} | {("pkg", n) for n in MODULES if n != "shopify"})


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: f"{c.connector}-{c.label}")
def test_same_definition_id(client: Client) -> None:
    assert CATALOG[client.connector].definition_id == str(client.model.id)


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: f"{c.connector}-{c.label}")
def test_params_the_client_sends_are_the_ones_keyrelay_takes(client: Client) -> None:
    problems = []
    for entity, action, endpoint, ours in _shared(client):
        where = f"{entity}.{action}"
        sent = _sent(client, entity, action, endpoint)
        unknown = sorted(sent - set(ours.params) - KNOWN_GAPS.get(client.connector, frozenset()))
        if unknown:
            problems.append(f"{where}: keyrelay refuses {unknown}")
        lacking = sorted(_required(endpoint) - set(ours.params))
        if lacking:
            problems.append(f"{where}: the client requires {lacking}, keyrelay has no such param")
        never = sorted(n for n, p in ours.params.items() if p.required and p.default is None and n not in sent)
        if never:
            problems.append(f"{where}: keyrelay requires {never}, which the client never sends")
        for name, kind in _types(endpoint).items():
            param = ours.params.get(name)
            kinds = kind if isinstance(kind, list) else [kind]
            if param is not None and kind is not None and param.type not in kinds and not (
                    param.type == "number" and "integer" in kinds):
                problems.append(f"{where}.{name}: the client sends {kind}, keyrelay wants {param.type}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: f"{c.connector}-{c.label}")
def test_metadata_the_typed_results_read_is_answered(client: Client) -> None:
    problems = []
    for entity, action, endpoint, ours in _shared(client):
        keys = set(ours.metadata) | ({"next_cursor"} if ours.pagination.type == "cursor" else set())
        fields = _meta_fields(client, entity, action)
        missing = sorted(n for n, alias in fields.items() if n not in keys and alias not in keys)
        extracted = set(endpoint.meta_extractor or {})
        missing += sorted(k for k in extracted - keys if k not in fields and k not in fields.values())
        if missing:
            problems.append(f"{entity}.{action}: connector_metadata lacks {missing}")
    assert not problems, "\n".join(problems)

"""The OAuth provider a connector declares for Connect (`oauth:` in its definition; docs/connect.md), and the
credential a completed authorization leaves on a source.

A definition says where the provider's authorize and token endpoints are (their URLs may name config fields that
the end customer gives first, such as Shopify's `shop`), the default scopes, how the access token is sent, and
what else the authorization yields: config fields copied from the token response (Salesforce's `instance_url`)
or found by one discovery request (Atlassian's cloud id). The operator's own OAuth client (its id, secret and any
URL overrides) is registered separately and never lives in a definition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyrelay.egress import destination
from keyrelay.errors import InvalidRequest

_HEADER = "^[A-Za-z0-9!#$%&'*+.^`|~-]{1,64}$"
_TEMPLATE_VALUE = re.compile(r"[\x21-\x7e]{1,2048}")  # what a provider's answer may put into a config field
_LABEL_VALUE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # what a customer puts into a URL

OAUTH_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["authorize_url", "token_url"],
    "properties": {
        "authorize_url": {"type": "string", "minLength": 8}, "token_url": {"type": "string", "minLength": 8},
        "scopes": {"type": "array", "items": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"}},
        "scope_separator": {"enum": [" ", ","]},
        "customer_config": {"type": "array", "items": {"type": "string"}},
        "authorize_params": {"type": "object", "additionalProperties": {"type": "string"}},
        "auth_method": {"enum": ["client_secret_post", "client_secret_basic"]},
        "header": {"type": "string", "pattern": _HEADER}, "prefix": {"type": "string", "maxLength": 64},
        "access_token_field": {"type": "string"},
        "config_from_token": {"type": "object", "additionalProperties": {"type": "string"}},
        "discover": {
            "type": "object", "additionalProperties": False, "required": ["url", "config"],
            "properties": {"url": {"type": "string"}, "records": {"type": "string"},
                           "config": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
    },
}

# The `oauth2` credential a completed authorization stores (the generic kind of docs/connectors.md): a
# connector that declares `oauth` accepts it in place of its own credential fields.
OAUTH2_CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["oauth2"],
    "properties": {"oauth2": {
        "type": "object", "additionalProperties": False,
        "required": ["token_url", "client_id", "client_secret", "grant_type", "refresh_token"],
        "properties": {
            "token_url": {"type": "string", "minLength": 1, "maxLength": 2048},
            "client_id": {"type": "string", "minLength": 1, "maxLength": 1024},
            "client_secret": {"type": "string", "minLength": 1, "maxLength": 4096},
            "grant_type": {"const": "refresh_token"},
            "refresh_token": {"type": "string", "minLength": 1, "maxLength": 8192},
            "scope": {"type": "string", "minLength": 1, "maxLength": 2048},
            "auth_method": {"enum": ["client_secret_post", "client_secret_basic"]},
            "header": {"type": "string", "pattern": _HEADER},
            "prefix": {"type": "string", "maxLength": 64},
        },
    }},
}


@dataclass(frozen=True)
class Discovery:
    url: str
    records: str  # body path of the list of resources ("" = the whole body); the first one is used
    config: Mapping[str, str]  # config field -> template over the resource's fields


@dataclass(frozen=True)
class Provider:
    """A connector's `oauth` block."""

    authorize_url: str  # templates: `{field}` names a config field
    token_url: str
    scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    customer_config: tuple[str, ...] = ()
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    auth_method: str = "client_secret_post"
    header: str = "Authorization"
    prefix: str = "Bearer "
    access_token_field: str | None = None
    config_from_token: Mapping[str, str] = field(default_factory=dict)
    discover: Discovery | None = None


def provider_of(raw: Mapping[str, Any]) -> Provider | None:
    """The `oauth` block of a definition (already checked against OAUTH_SCHEMA), or None."""
    block = raw.get("oauth")
    if not isinstance(block, Mapping):
        return None
    disc = block.get("discover")
    return Provider(
        authorize_url=block["authorize_url"], token_url=block["token_url"], scopes=tuple(block.get("scopes") or ()),
        scope_separator=block.get("scope_separator", " "), customer_config=tuple(block.get("customer_config") or ()),
        authorize_params=dict(block.get("authorize_params") or {}),
        auth_method=block.get("auth_method", "client_secret_post"), header=block.get("header", "Authorization"),
        prefix=block.get("prefix", "Bearer "), access_token_field=block.get("access_token_field"),
        config_from_token=dict(block.get("config_from_token") or {}),
        discover=None if disc is None else Discovery(url=disc["url"], records=disc.get("records", ""),
                                                     config=dict(disc["config"])),
    )


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(subdomain))?\}")


def fill(template: str, values: Mapping[str, Any], *, what: str, label: bool = False) -> str:
    """Substitute `{name}` with a value that must be one printable ASCII word (no spaces, no control bytes), or
    with `label`, one DNS label; `{name:subdomain}` takes the first label of the host of the URL in `name`
    (`https://acme.atlassian.net` gives `acme`)."""
    allowed = _LABEL_VALUE if label else _TEMPLATE_VALUE

    def sub(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not allowed.fullmatch(value):
            raise InvalidRequest(f"The {what} has no usable '{m.group(1)}'")
        if m.group(2) == "subdomain":
            value = value.partition("://")[2].split("/", 1)[0].split(".", 1)[0]
        return value

    return _PLACEHOLDER.sub(sub, template)


def endpoint(template: str, config: Mapping[str, Any], *, what: str) -> str:
    """An authorize or token URL for one customer: placeholders filled from config with DNS labels only (a
    customer's value can never bring a `.`, `/`, `@` or `:` into the URL), then checked like any base URL."""
    url = fill(template, config, what=what, label=True)
    try:
        base = destination.parse_base_url(url)
    except InvalidRequest:
        raise InvalidRequest(f"The {what} is not a valid URL") from None
    return base.origin + base.path


def placeholders(template: str) -> set[str]:
    return {name for name, _ in _PLACEHOLDER.findall(template)}


def origin_source(template: str) -> str:
    """A Content-Security-Policy source for an authorize URL template: its origin, with a leading `{field}.`
    host label as `*.` (Shopify's `https://*.myshopify.com`); just the scheme if the host is otherwise templated."""
    scheme, _, rest = template.partition("://")
    host = rest.split("/", 1)[0]
    if "{" in host:
        label, dot, tail = host.partition(".")
        if not (dot and label.startswith("{") and label.endswith("}") and "{" not in tail):
            return f"{scheme}:"
        host = "*." + tail
    return f"{scheme}://{host}"

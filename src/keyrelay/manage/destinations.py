"""The destination a source's credentials are bound to (docs/security.md: encryption at rest).

A source's destination is its connector plus every origin (scheme, host, port) its requests and token refreshes
can go to, as its config decides them: the base URL (`upstream_url`, a `base_url` override, or the connector's
default with the config's values filled in, e.g. a Shopify shop or a Zendesk subdomain), every other URL the
config names (`endpoint_url`, `instance_url`, `login_url`), a catalog connector's OAuth2 token URL filled in from
the config, and a file source's object store. The vault binds each ciphertext to this string, so a stored
credential never follows its source to another host: changing any of these needs the credentials again
(`SourceService.update_source`), and a database edit of them leaves the credentials unusable.

Paths are not part of it: moving `https://api.example.com/v1` to `/v2` keeps the credentials. An OAuth2 token URL
stored inside the `oauth2` credential itself is bound by being inside the ciphertext.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.egress import destination
from keyrelay.errors import InvalidRequest
from keyrelay.files.stores import FILE_CONNECTORS, default_url
from keyrelay.pipeline.inject import template

URL_FIELDS = ("upstream_url", "base_url", "endpoint_url", "instance_url", "login_url")


def origin(url: str) -> str:
    """`scheme://host:port` with the port always written; an unparsable URL gets a digest (never equal to an
    origin, and stable, so the same bad config gives the same destination)."""
    try:
        base = destination.parse_base_url(url)
    except InvalidRequest:
        return "invalid:" + hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    host = f"[{base.host}]" if ":" in base.host else base.host
    return f"{base.scheme}://{host}:{base.port}"


def _template_urls(auth: Any, key: str = "") -> Iterator[str]:
    """URL templates in a connector's `auth` mapping (e.g. oauth2 `token_url`)."""
    if isinstance(auth, Mapping):
        for k, v in auth.items():
            yield from _template_urls(v, str(k))
    elif isinstance(auth, str) and key.endswith("_url"):
        yield auth


class Destinations:
    """`destinations(connector, config)` -> the destination string (the `DestinationOf` port)."""

    def __init__(self, catalog: Mapping[str, ConnectorSpec]) -> None:
        self._catalog = catalog

    def __call__(self, connector: str, config: Mapping[str, Any]) -> str:
        origins = {origin(v) for k in URL_FIELDS if isinstance(v := config.get(k), str) and v}
        spec = self._catalog.get(connector)
        if spec is not None:
            origins |= self._implied(spec, config)
        return " ".join([connector, *sorted(origins)])

    @staticmethod
    def _implied(spec: ConnectorSpec, config: Mapping[str, Any]) -> set[str]:
        """Origins the connector definition derives from the config."""
        out = set()
        if spec.kind == "api" and spec.default_base_url and not (config.get("upstream_url") or config.get("base_url")):
            try:
                out.add(origin(str(template.render(spec.default_base_url, config))))
            except InvalidRequest:
                out.add("unfilled:" + spec.default_base_url)  # the config lacks a value the template needs
        for url in _template_urls(spec.auth):
            with contextlib.suppress(InvalidRequest):  # filled from the credentials: the ciphertext covers those
                out.add(origin(str(template.render(url, config))))
        if spec.name in FILE_CONNECTORS and spec.name != "local" and not config.get("endpoint_url"):
            try:
                out.add(origin(default_url(spec.name, config)))
            except KeyError:
                out.add("unfilled:" + spec.name)
        return out

"""Sources: create, read, update, delete. Credentials are write-only, and bound to where the source sends them:
changing that needs the credentials again (manage/destinations.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.egress import destination, ssrf
from keyrelay.errors import CredentialsRequired, InvalidRequest, NotFound, SsrfBlocked, UpstreamUnreachable
from keyrelay.manage.destinations import URL_FIELDS, Destinations
from keyrelay.manage.policy import check_policy
from keyrelay.manage.workspaces import WorkspaceService, check_name
from keyrelay.model import OAUTH_STATE_FIELD, Caller, NewSource, Source
from keyrelay.pipeline.constraints import source_ok
from keyrelay.ports import Clock, SourceStore, Vault

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]
    return slug or "source"


def _check_credentials(spec: ConnectorSpec, data: Any) -> dict[str, Any]:
    creds = spec.check_credentials(data)
    if OAUTH_STATE_FIELD in creds:
        raise InvalidRequest(f"credentials.{OAUTH_STATE_FIELD} is reserved", field=f"credentials.{OAUTH_STATE_FIELD}")
    _check_secrets(creds)
    return creds


def _urls(config: Mapping[str, Any], credentials: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every operator-configured destination: config URL fields and an OAuth2 token endpoint."""
    urls = [(f"config.{key}", config.get(key)) for key in URL_FIELDS]
    oauth2 = credentials.get("oauth2")
    if isinstance(oauth2, Mapping):
        urls.append(("credentials.oauth2.token_url", oauth2.get("token_url")))
    return urls


def _check_secrets(value: Any, path: str = "credentials") -> None:
    """Credential strings may not carry control characters (header injection)."""
    if isinstance(value, str):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise InvalidRequest(f"Invalid {path}: control characters are not allowed", field=path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_secrets(v, f"{path}.{k}")
    elif isinstance(value, list):
        for v in value:
            _check_secrets(v, path)


class SourceService:
    def __init__(self, *, sources: SourceStore, workspaces: WorkspaceService, vault: Vault,
                 catalog: Mapping[str, ConnectorSpec], clock: Clock, allow: tuple[ssrf.Network, ...],
                 on_change: Callable[[str], None] = lambda _id: None) -> None:
        self._sources = sources
        self._workspaces = workspaces
        self._vault = vault
        self._catalog = catalog
        self._clock = clock
        self._allow = allow
        self.on_change = on_change
        self.on_deleted: Callable[[Source], None] = lambda _src: None  # webhooks: connection.deleted
        self.local_roots: tuple[Path, ...] = ()
        self.destinations = Destinations(catalog)

    # sources ------------------------------------------------------------------------------------------
    def connector(self, name: Any) -> ConnectorSpec:
        spec = self._catalog.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(sorted(self._catalog))
            raise InvalidRequest(f"Unknown connector; known connectors: {known}", field="connector")
        return spec

    def connector_by_any(self, ref: str) -> ConnectorSpec:
        """A connector by name or by its Airbyte definition id (the seeds' sourceDefinitionId)."""
        for spec in self._catalog.values():
            if ref in (spec.name, spec.definition_id):
                return spec
        return self.connector(ref)

    async def create_source(self, caller: Caller, body: Mapping[str, Any]) -> Source:
        ws = await self._workspaces.get(caller, str(body.get("workspace_id", "")))
        spec = self.connector(body.get("connector"))
        name = check_name(body.get("name"))
        slug = body.get("slug") or slugify(name)
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            raise InvalidRequest("slug must match [a-z0-9][a-z0-9_-]{0,63}", field="slug")
        config = spec.check_config(body.get("config"))
        creds = _check_credentials(spec, body.get("credentials"))
        policy = check_policy(body.get("policy"), catalog_api=spec.is_catalog_api)
        await self._check_destinations(config, creds)
        self._check_local_root(spec.name, config)
        source_id = str(uuid.uuid4())
        sealed = await self._vault.seal(workspace_id=ws.id, source_id=source_id,
                                        destination=self.destinations(spec.name, config), fields=creds)
        new = NewSource(id=source_id, workspace_id=ws.id, connector=spec.name, name=name, slug=slug,
                        config=config, policy=policy)
        return await self._sources.create_source(new, sealed, now=self._clock())

    def _check_local_root(self, connector: str, config: Mapping[str, Any]) -> None:
        """A `local` source must serve a directory inside KEYRELAY_LOCAL_ROOTS (also re-checked per request)."""
        if connector != "local":
            return
        root = Path(str(config.get("root", ""))).resolve()
        if not any(root == r or r in root.parents for r in self.local_roots):
            raise InvalidRequest("config.root is not inside a directory allowed by KEYRELAY_LOCAL_ROOTS",
                                 field="config.root")

    async def _check_destinations(self, config: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """Config-time SSRF check (fast 422); the dialer checks again on every connection."""
        for key, url in _urls(config, credentials):
            if isinstance(url, str):
                try:
                    base = destination.parse_base_url(url)
                except InvalidRequest as err:
                    raise InvalidRequest(f"Invalid {key}: {err.message}", field=key) from None
                try:
                    await ssrf.resolve_checked(base.host, base.port, allow=self._allow)
                except SsrfBlocked as err:
                    raise SsrfBlocked(err.message, field=key) from None
                except UpstreamUnreachable:
                    pass  # DNS is down or the name is not public yet: the dialer checks every connection

    async def get_source(self, caller: Caller, source_id: str) -> Source:
        src = await self._sources.get_source(source_id)
        if src is None or not caller.can_reach(src.workspace_id):
            raise NotFound("Source not found")
        return src

    async def list_sources(self, caller: Caller, workspace_id: str | None) -> list[Source]:
        """The sources of one workspace, or of every workspace the caller reaches; a narrowed token sees only the
        sources its constraints allow."""
        if workspace_id is not None:
            await self._workspaces.get(caller, workspace_id)
        elif caller.workspace_id is not None:
            workspace_id = caller.workspace_id
        found = await self._sources.list_sources(workspace_id=workspace_id)
        return [s for s in found if caller.can_reach(s.workspace_id) and all(
            c.observe or source_ok(c, s.id, s.slug) for c in caller.constraints)]

    async def update_source(self, caller: Caller, source_id: str, body: Mapping[str, Any]) -> Source:
        src = await self.get_source(caller, source_id)
        spec = self.connector(src.connector)
        changes = _plain_changes(body)
        if "config" in body:
            changes["config"] = await self._config_change(src, spec, body)
        if "policy" in body:
            current = await self._raw_policy(src)
            changes["policy"] = check_policy(body["policy"], catalog_api=spec.is_catalog_api, current=current)
        sealed = None
        if "credentials" in body:
            creds = _check_credentials(spec, body["credentials"])
            await self._check_destinations({}, creds)
            sealed = await self._vault.seal(workspace_id=src.workspace_id, source_id=src.id,
                                            destination=self.destinations(spec.name, changes.get("config", src.config)),
                                            fields=creds)
            if src.status == "needs_reauth" and "status" not in changes:
                changes["status"] = "active"  # new credentials: try them (the OAuth token state is replaced too)
        updated = await self._sources.update_source(src.id, changes=changes, sealed=sealed, now=self._clock())
        if updated is None:
            raise NotFound("Source not found")
        self.on_change(src.id)
        return updated

    async def _config_change(self, src: Source, spec: ConnectorSpec, body: Mapping[str, Any]) -> dict[str, Any]:
        """The new config, refused when it moves the source's destination and the body brings no credentials."""
        config = spec.check_config(body["config"])
        self._check_local_root(spec.name, config)
        await self._check_destinations(config, {})
        if "credentials" not in body and src.credential_fields and \
                self.destinations(spec.name, config) != self.destinations(spec.name, src.config):
            raise CredentialsRequired(
                "This change sends the source's requests to another destination (scheme, host or port); stored "
                "credentials never follow a source elsewhere: send its credentials in the same request",
                field="credentials")
        return config

    async def _raw_policy(self, src: Source) -> dict[str, Any]:
        return src.policy.to_mapping()

    async def delete_source(self, caller: Caller, source_id: str) -> None:
        src = await self.get_source(caller, source_id)
        await self._sources.delete_source(src.id)
        self.on_change(src.id)
        self.on_deleted(src)


def _plain_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a source update that need no lookup: name, slug, status (unknown fields are refused)."""
    unknown = set(body) - {"name", "slug", "config", "credentials", "policy", "status"}
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = check_name(body["name"])
    if "slug" in body:
        if not isinstance(body["slug"], str) or not _SLUG.fullmatch(body["slug"]):
            raise InvalidRequest("slug must match [a-z0-9][a-z0-9_-]{0,63}", field="slug")
        changes["slug"] = body["slug"]
    if "status" in body:
        if body["status"] not in ("active", "inactive"):
            raise InvalidRequest("status must be 'active' or 'inactive'", field="status")
        changes["status"] = body["status"]
    return changes

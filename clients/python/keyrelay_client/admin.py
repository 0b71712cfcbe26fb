"""Admin resources: workspaces, sources, API keys, applications, connect sessions, the connector catalog.

Admin routes, reads included, need an application token holding `admin` (client credentials); an API key, a
workspace-scoped token or an application without `admin` gets `403 forbidden` (docs/security.md). Two reads serve
any token: `connectors.entities()` and, with the `query` scope, `sources.streams()`. Wherever a workspace is
named, its name or its id works: an id (a UUID) is used as is, a name is looked up with `GET /api/v1/workspaces`
(an admin read).

Each `*Ops` class holds the operations (routes, bodies, parsing) once; the sync and async resources below it
only declare which of them they expose.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from keyrelay_client.calls import Call, Operation, items, obj, path
from keyrelay_client.errors import Forbidden, LookupFailed, UsageError
from keyrelay_client.models import (
    ApiKey,
    Application,
    ApplicationSecret,
    ConnectorInfo,
    ConnectSession,
    NewApiKey,
    ScopedToken,
    Source,
    Workspace,
)
from keyrelay_client.surface import AsyncResource, SyncResource, awaiting, blocking

WorkspaceRef = str | Workspace
SourceRef = str | Source


def is_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def source_id(ref: SourceRef) -> str:
    if isinstance(ref, Source):
        return ref.id
    if not isinstance(ref, str) or not ref:
        raise UsageError("source must be a source id or a Source")
    return ref


def find_workspace(ref: WorkspaceRef) -> Operation[Workspace]:
    """The workspace named by `ref` (a `Workspace`, an id or a name)."""
    if isinstance(ref, Workspace):
        return ref
    if not isinstance(ref, str) or not ref:
        raise UsageError("workspace must be a workspace name, an id or a Workspace")
    if is_id(ref):
        return Workspace.from_json(obj((yield Call("GET", path("api", "v1", "workspaces", ref)))))
    listed = items((yield Call("GET", "/api/v1/workspaces", params={"name_contains": ref})))
    found = [Workspace.from_json(w) for w in listed if w.get("name") == ref]
    if not found:
        raise LookupFailed(f"No workspace named {ref!r} is visible to these credentials")
    return found[0]


def workspace_id(ref: WorkspaceRef) -> Operation[str]:
    """The id of the workspace named by `ref`, looking a name up only when it is not an id."""
    if isinstance(ref, str) and is_id(ref):
        return ref
    return (yield from find_workspace(ref)).id


def own_workspace_id(ref: WorkspaceRef) -> Operation[str]:
    """`workspace_id` for the doors an agent uses: looking a name up is an admin read, so credentials without
    admin power (an API key, a workspace-scoped token, an application without `admin`) must name the workspace
    by its id; they get `LookupFailed` saying so instead of the lookup's `403`."""
    try:
        return (yield from workspace_id(ref))
    except Forbidden:
        raise LookupFailed(f"Cannot look up workspace {ref!r} by name: that needs an application token holding "
                           "admin. Pass the workspace id instead (e.g. ScopedToken.workspace_id)") from None


def _iso(value: dt.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise UsageError("Times need a time zone, e.g. datetime(2030, 1, 1, tzinfo=timezone.utc)")
    return value.isoformat()


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# --- workspaces -----------------------------------------------------------------------------------------------


class WorkspaceOps:
    def create(self, name: str) -> Operation[Workspace]:
        """Create a workspace (one end customer). Names are unique: a taken one raises `Conflict`."""
        return Workspace.from_json(obj((yield Call("POST", "/api/v1/workspaces", json={"name": name}))))

    def get(self, workspace: WorkspaceRef) -> Operation[Workspace]:
        """One workspace, by name or id."""
        return (yield from find_workspace(workspace))

    def delete(self, workspace: WorkspaceRef) -> Operation[None]:
        """Delete a workspace, with its sources and API keys."""
        wid = yield from workspace_id(workspace)
        yield Call("DELETE", path("api", "v1", "workspaces", wid))

    def scoped_token(self, workspace_name: str) -> Operation[ScopedToken]:
        """A workspace-scoped token (1200 s, every scope, that workspace only); creates the workspace if needed."""
        call = Call("POST", "/api/v1/embedded/scoped-token", json={"workspace_name": workspace_name})
        return ScopedToken.from_json(obj((yield call)))

    def list(self, name_contains: str | None = None) -> Operation[list[Workspace]]:
        """Every workspace (an API key or workspace token sees only its own)."""
        params = None if name_contains is None else {"name_contains": name_contains}
        return [Workspace.from_json(w) for w in items((yield Call("GET", "/api/v1/workspaces", params=params)))]


class Workspaces(SyncResource):
    create = blocking(WorkspaceOps.create)
    list = blocking(WorkspaceOps.list)
    get = blocking(WorkspaceOps.get)
    delete = blocking(WorkspaceOps.delete)
    scoped_token = blocking(WorkspaceOps.scoped_token)


class AsyncWorkspaces(AsyncResource):
    create = awaiting(WorkspaceOps.create)
    list = awaiting(WorkspaceOps.list)
    get = awaiting(WorkspaceOps.get)
    delete = awaiting(WorkspaceOps.delete)
    scoped_token = awaiting(WorkspaceOps.scoped_token)


# --- sources --------------------------------------------------------------------------------------------------


class SourceOps:
    def create(self, workspace: WorkspaceRef, connector: str, name: str, *, slug: str | None = None,
               config: Mapping[str, Any] | None = None, credentials: Mapping[str, Any] | None = None,
               policy: Mapping[str, Any] | None = None) -> Operation[Source]:
        """Add a source: a connector instance holding encrypted credentials and a policy (docs/connectors.md).

        The answer never contains a credential value; `Source.credentials` lists the fields that are set.
        """
        wid = yield from workspace_id(workspace)
        body = _drop_none(workspace_id=wid, connector=connector, name=name, slug=slug, config=dict(config or {}),
                          credentials=dict(credentials or {}), policy=None if policy is None else dict(policy))
        return Source.from_json(obj((yield Call("POST", "/api/v1/sources", json=body))))

    def get(self, source: SourceRef) -> Operation[Source]:
        return Source.from_json(obj((yield Call("GET", path("api", "v1", "sources", source_id(source))))))

    def update(self, source: SourceRef, *, name: str | None = None, slug: str | None = None,
               config: Mapping[str, Any] | None = None, credentials: Mapping[str, Any] | None = None,
               policy: Mapping[str, Any] | None = None, status: str | None = None) -> Operation[Source]:
        """Change a source. `credentials` replaces every credential field."""
        body = _drop_none(name=name, slug=slug, config=None if config is None else dict(config),
                          credentials=None if credentials is None else dict(credentials),
                          policy=None if policy is None else dict(policy), status=status)
        if not body:
            raise UsageError("Nothing to change: pass at least one of name, slug, config, credentials, policy, status")
        call = Call("PATCH", path("api", "v1", "sources", source_id(source)), json=body)
        return Source.from_json(obj((yield call)))

    def delete(self, source: SourceRef) -> Operation[None]:
        yield Call("DELETE", path("api", "v1", "sources", source_id(source)))

    def streams(self, source: SourceRef) -> Operation[list[dict[str, Any]]]:
        """The streams a catalog API source offers to `query()`: names, record schemas, filters, page sizes."""
        return items((yield Call("GET", path("api", "v1", "sources", source_id(source), "streams"))))

    def list(self, workspace: WorkspaceRef | None = None) -> Operation[list[Source]]:
        """The sources of one workspace, or of every workspace the credentials reach."""
        params = None if workspace is None else {"workspace_id": (yield from workspace_id(workspace))}
        return [Source.from_json(s) for s in items((yield Call("GET", "/api/v1/sources", params=params)))]


class Sources(SyncResource):
    create = blocking(SourceOps.create)
    list = blocking(SourceOps.list)
    get = blocking(SourceOps.get)
    update = blocking(SourceOps.update)
    delete = blocking(SourceOps.delete)
    streams = blocking(SourceOps.streams)


class AsyncSources(AsyncResource):
    create = awaiting(SourceOps.create)
    list = awaiting(SourceOps.list)
    get = awaiting(SourceOps.get)
    update = awaiting(SourceOps.update)
    delete = awaiting(SourceOps.delete)
    streams = awaiting(SourceOps.streams)


# --- API keys -------------------------------------------------------------------------------------------------


class ApiKeyOps:
    def create(self, workspace: WorkspaceRef, scopes: Sequence[str], *, name: str = "",
               expires_at: dt.datetime | str | None = None) -> Operation[NewApiKey]:
        """An API key bound to one workspace and `scopes` (`proxy`, `files`, `query`, `execute`, `mcp`, `logs`).

        `NewApiKey.key` is the only time the key is shown.
        """
        wid = yield from workspace_id(workspace)
        body = _drop_none(workspace_id=wid, scopes=list(scopes), name=name, expires_at=_iso(expires_at))
        return NewApiKey.from_json(obj((yield Call("POST", "/api/v1/api-keys", json=body))))

    def delete(self, key_id: str) -> Operation[None]:
        """Revoke an API key; it stops working at once."""
        yield Call("DELETE", path("api", "v1", "api-keys", key_id))

    def list(self, workspace: WorkspaceRef | None = None) -> Operation[list[ApiKey]]:
        params = None if workspace is None else {"workspace_id": (yield from workspace_id(workspace))}
        return [ApiKey.from_json(k) for k in items((yield Call("GET", "/api/v1/api-keys", params=params)))]


class ApiKeys(SyncResource):
    create = blocking(ApiKeyOps.create)
    list = blocking(ApiKeyOps.list)
    delete = blocking(ApiKeyOps.delete)


class AsyncApiKeys(AsyncResource):
    create = awaiting(ApiKeyOps.create)
    list = awaiting(ApiKeyOps.list)
    delete = awaiting(ApiKeyOps.delete)


# --- applications ---------------------------------------------------------------------------------------------


class ApplicationOps:
    def create(self, name: str, *, workspaces: Sequence[str] | str = "*",
               scopes: Sequence[str] = ()) -> Operation[ApplicationSecret]:
        """A machine client limited to `workspaces` (ids or names, or `"*"` for all) and `scopes` (at least one:
        the data scopes, `admin`, `approve`); its tokens carry only those, and never more than the caller holds.
        `ApplicationSecret.client_secret` is shown this once."""
        body = {"name": name, "workspaces": workspaces if isinstance(workspaces, str) else list(workspaces),
                "scopes": list(scopes)}
        return ApplicationSecret.from_json(obj((yield Call("POST", "/api/v1/applications", json=body))))

    def update(self, application_id: str, *, workspaces: Sequence[str] | str | None = None,
               scopes: Sequence[str] | None = None) -> Operation[Application]:
        """Change what an application reaches; tokens already issued carry the change at once."""
        body: dict[str, Any] = {}
        if workspaces is not None:
            body["workspaces"] = workspaces if isinstance(workspaces, str) else list(workspaces)
        if scopes is not None:
            body["scopes"] = list(scopes)
        if not body:
            raise UsageError("Nothing to change: pass workspaces, scopes or both")
        call = Call("PATCH", path("api", "v1", "applications", application_id), json=body)
        return Application.from_json(obj((yield call)))

    def delete(self, application_id: str) -> Operation[None]:
        """Revoke an application and every token minted from it; it stays listed, with `revoked` set."""
        yield Call("DELETE", path("api", "v1", "applications", application_id))

    def rotate_secret(self, application_id: str) -> Operation[ApplicationSecret]:
        """A new client secret; the old one, and every token minted with it, stop working."""
        call = Call("POST", path("api", "v1", "applications", application_id, "rotate-secret"))
        return ApplicationSecret.rotated(obj((yield call)))

    def list(self) -> Operation[list[Application]]:
        """Every application the credentials reach (revoked ones included), never a secret."""
        return [Application.from_json(a) for a in items((yield Call("GET", "/api/v1/applications")))]


class Applications(SyncResource):
    create = blocking(ApplicationOps.create)
    list = blocking(ApplicationOps.list)
    update = blocking(ApplicationOps.update)
    delete = blocking(ApplicationOps.delete)
    rotate_secret = blocking(ApplicationOps.rotate_secret)


class AsyncApplications(AsyncResource):
    create = awaiting(ApplicationOps.create)
    list = awaiting(ApplicationOps.list)
    update = awaiting(ApplicationOps.update)
    delete = awaiting(ApplicationOps.delete)
    rotate_secret = awaiting(ApplicationOps.rotate_secret)


# --- connect sessions -----------------------------------------------------------------------------------------


class ConnectSessionOps:
    def create(self, workspace: str, *, connectors: Sequence[str] | None = None, source_id: str | None = None,
               redirect_url: str | None = None, allowed_origins: Sequence[str] | None = None,
               config: Mapping[str, Any] | None = None, expires_in: int | None = None) -> Operation[ConnectSession]:
        """A hosted page where the end user of `workspace` connects an account (or re-connects `source_id`).

        Send the user to `ConnectSession.url`. `workspace` is passed to keyrelay as given.
        """
        body = _drop_none(workspace=workspace, connectors=None if connectors is None else list(connectors),
                          source_id=source_id, redirect_url=redirect_url,
                          allowed_origins=None if allowed_origins is None else list(allowed_origins),
                          config=None if config is None else dict(config), expires_in=expires_in)
        return ConnectSession.from_json(obj((yield Call("POST", "/api/v1/connect/sessions", json=body))))


class ConnectSessions(SyncResource):
    create = blocking(ConnectSessionOps.create)


class AsyncConnectSessions(AsyncResource):
    create = awaiting(ConnectSessionOps.create)


# --- the connector catalog ------------------------------------------------------------------------------------


class ConnectorOps:
    def entities(self, name: str) -> Operation[list[dict[str, Any]]]:
        """One connector's entities, actions, params and paging (docs/connectors.md)."""
        return items((yield Call("GET", path("api", "v1", "connectors", name, "entities"))))

    def list(self) -> Operation[list[ConnectorInfo]]:
        """The catalog: every connector with its config and credentials JSON schemas."""
        return [ConnectorInfo.from_json(c) for c in items((yield Call("GET", "/api/v1/connectors")))]


class Connectors(SyncResource):
    list = blocking(ConnectorOps.list)
    entities = blocking(ConnectorOps.entities)


class AsyncConnectors(AsyncResource):
    list = awaiting(ConnectorOps.list)
    entities = awaiting(ConnectorOps.entities)

"""Connector facades built at run time from the catalog: `kr.connector("stripe", workspace="acme")`.

Binding a facade finds the workspace's source of that connector (pass `source=` an id, slug or name when there are
several) and reads the connector's entities, actions and params (`GET /api/v1/connectors/{name}/entities`,
docs/connectors.md). An application's client credentials list sources with the admin route `GET /api/v1/sources`
(falling back when the application lacks `admin`); an API key or token, which may not make admin reads, uses the
lookup made for agents, `GET /api/v1/integrations/connectors` (the `execute` scope, its own workspace): its
`Source` then has the id, name, workspace and status only (no slug, config or policy).

Then `facade.customers.list(limit=10)` checks the params against the catalog (an unknown, missing or mistyped one
raises `InvalidParameter` before anything is sent; an unknown entity or action raises `UnknownEntity` /
`UnknownAction`) and runs execute.

A collection action returns an auto-paging iterator over its records. It pages the way the catalog says:
`cursor` by passing `connector_metadata.next_cursor` back as the action's page param, `offset` and
`page_number` by advancing the page param until a page comes back short. Collections paged by a URL
(`link_header`, `next_url`) cannot be continued through execute: a stream's `list` then pages through the stream
query instead (it needs the `query` scope, and takes only filter params); any other such collection yields its
first page only (its `connector_metadata` says whether there is more).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from keyrelay_client.admin import WorkspaceRef, is_id, workspace_id
from keyrelay_client.calls import Call, Operation, items, path
from keyrelay_client.doors import QueryPager, execute_op
from keyrelay_client.errors import (
    Forbidden,
    InvalidParameter,
    LookupFailed,
    UnexpectedResponse,
    UnknownAction,
    UnknownEntity,
    UsageError,
)
from keyrelay_client.models import Page, Source, Workspace
from keyrelay_client.paging import AsyncPaginator, Pager, Paginator
from keyrelay_client.runner import AsyncRunner, SyncRunner

PY_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list, tuple),
    "object": (dict,),
}
Record = dict[str, Any]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    required: bool
    description: str = ""
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    has_default: bool = False
    filter: bool = True

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParamSpec:
        enum = data.get("enum")
        return cls(name=str(data["name"]), type=str(data["type"]), required=bool(data.get("required")),
                   description=str(data.get("description", "")), enum=None if enum is None else tuple(enum),
                   minimum=data.get("minimum"), maximum=data.get("maximum"), has_default="default" in data,
                   filter=bool(data.get("filter", True)))

    def check(self, where: str, value: Any) -> None:
        kinds = PY_TYPES.get(self.type, (object,))
        if not isinstance(value, kinds) or (isinstance(value, bool) and self.type in ("integer", "number")):
            raise InvalidParameter(f"Parameter '{self.name}' of {where} must be of type {self.type}")
        if self.enum is not None and value not in self.enum:
            raise InvalidParameter(f"Parameter '{self.name}' of {where} must be one of: "
                                   + ", ".join(map(str, self.enum)))
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                (self.minimum is not None and value < self.minimum)
                or (self.maximum is not None and value > self.maximum)):
            raise InvalidParameter(f"Parameter '{self.name}' of {where} must be between {self.minimum} and "
                                   f"{self.maximum}")


@dataclass(frozen=True)
class PagingSpec:
    type: str
    page_param: str | None
    size_param: str | None
    default_size: int
    start: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PagingSpec:
        return cls(type=str(data.get("type", "none")), page_param=data.get("page_param"),
                   size_param=data.get("size_param"), default_size=int(data.get("default_size", 25)),
                   start=int(data.get("start", 0)))


@dataclass(frozen=True)
class ActionSpec:
    entity: str
    name: str
    description: str
    writes: bool
    collection: bool
    stream: bool
    params: Mapping[str, ParamSpec]
    paging: PagingSpec | None

    @classmethod
    def from_json(cls, entity: str, stream: bool, data: Mapping[str, Any]) -> ActionSpec:
        pag = data.get("pagination")
        return cls(entity=entity, name=str(data["name"]), description=str(data.get("description", "")),
                   writes=bool(data.get("writes")), collection=bool(data.get("collection")),
                   stream=stream and data.get("name") == "list",
                   params={str(p["name"]): ParamSpec.from_json(p) for p in data.get("params", [])},
                   paging=PagingSpec.from_json(pag) if isinstance(pag, Mapping) else None)

    @property
    def where(self) -> str:
        return f"{self.entity}.{self.name}"

    def check(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The params to send: `given` without None values, each checked against the catalog."""
        values = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "(none)"
            raise InvalidParameter(f"Unknown parameter '{unknown[0]}' for {self.where}; valid parameters: {valid}")
        for name, spec in self.params.items():
            if name in values:
                spec.check(self.where, values[name])
            elif spec.required and not spec.has_default:
                raise InvalidParameter(f"Missing required parameter '{name}' for {self.where}")
        return values


@dataclass(frozen=True)
class EntitySpec:
    name: str
    description: str
    actions: Mapping[str, ActionSpec]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntitySpec:
        name, stream = str(data["name"]), bool(data.get("stream"))
        return cls(name=name, description=str(data.get("description", "")),
                   actions={str(a["name"]): ActionSpec.from_json(name, stream, a) for a in data.get("actions", [])})


@dataclass(frozen=True)
class Binding:
    """A connector bound to one source: what a facade needs."""

    connector: str
    source: Source
    entities: Mapping[str, EntitySpec]


def admin_sources(connector: str, workspace: WorkspaceRef) -> Operation[list[Source]]:
    """The workspace's sources of `connector`, from the admin listing (whole `Source`s)."""
    wid = yield from workspace_id(workspace)
    listed = [Source.from_json(s) for s in items((yield Call("GET", "/api/v1/sources",
                                                             params={"workspace_id": wid})))]
    return [s for s in listed if s.connector == connector]


def agent_sources(connector: str, workspace: WorkspaceRef) -> Operation[list[Source]]:
    """The workspace's sources of `connector`, from the connector lookup made for agents (the `execute` scope,
    its own workspace, by id or name): each source's id, name, workspace and status only."""
    if isinstance(workspace, Workspace):
        where = {"workspace_id": workspace.id}
    elif isinstance(workspace, str) and workspace:
        where = {"workspace_id": workspace} if is_id(workspace) else {"workspace_name": workspace}
    else:
        raise UsageError("workspace must be a workspace name, an id or a Workspace")
    call = Call("GET", "/api/v1/integrations/connectors", params={**where, "definition_id": connector})
    listed = items((yield call))
    try:
        return [Source(id=str(s["id"]), workspace_id=str(s["workspace_id"]), connector=connector,
                       name=str(s.get("name") or ""), slug="", status=str(s.get("status") or ""), config={},
                       credentials=[], policy={}, created_at=None, updated_at=None, raw=s) for s in listed]
    except (KeyError, TypeError):
        raise UnexpectedResponse("The connector lookup answer is malformed") from None


def bind(connector: str, workspace: WorkspaceRef, source: str | None = None, *,
         admin: bool = True) -> Operation[Binding]:
    """Find the source and read the connector's description. With `admin` (client credentials), the admin
    listing is tried first, giving whole `Source`s; without admin power, or for other credentials, the sources
    come from the agents' connector lookup, which knows each source's id and name but not its slug."""
    found: list[Source] | None = None
    if admin:
        try:
            found = yield from admin_sources(connector, workspace)
        except Forbidden:
            found = None
    if found is None:
        found = yield from agent_sources(connector, workspace)
    if source is not None:
        found = [s for s in found if source in (s.id, s.slug or None, s.name)]
    if not found:
        which = f" matching {source!r}" if source is not None else ""
        raise LookupFailed(f"The workspace has no {connector} source{which}")
    if len(found) > 1:
        slugs = ", ".join(sorted(s.slug or s.name for s in found))
        raise LookupFailed(f"The workspace has several {connector} sources ({slugs}): pass source= one of them")
    try:
        described = items((yield Call("GET", path("api", "v1", "connectors", connector, "entities"))))
        entities = {e.name: e for e in map(EntitySpec.from_json, described)}
    except (KeyError, TypeError, ValueError):
        raise UnexpectedResponse(f"The description of connector {connector} is malformed") from None
    return Binding(connector=connector, source=found[0], entities=entities)


@dataclass(frozen=True)
class ExecutePager:
    """The pages of a collection action through execute, advancing its page param as its paging type says."""

    source_id: str
    action: ActionSpec
    params: Mapping[str, Any]

    def page(self, position: Any) -> Operation[Page[Record]]:
        params, paging = dict(self.params), self.action.paging
        pageable = paging is not None and paging.page_param is not None and paging.type in (
            "cursor", "offset", "page_number")
        if pageable and paging is not None and paging.size_param and paging.type != "cursor":
            params.setdefault(paging.size_param, paging.default_size)  # a short page then means the last one
        if position is not None and paging is not None and paging.page_param is not None:
            params[paging.page_param] = position
        answer = yield from execute_op(self.source_id, self.action.entity, self.action.name, params,
                                       idempotent=not self.action.writes)
        records = answer.result
        if not isinstance(records, list):
            raise UnexpectedResponse(f"{self.action.where} did not return a list of records")
        nxt = _next_position(paging, params, records, answer.connector_metadata) if pageable else None
        return Page(items=records, next=nxt, metadata=answer.connector_metadata)


def _next_position(paging: PagingSpec | None, params: Mapping[str, Any], records: list[Any],
                   metadata: Mapping[str, Any]) -> Any:
    assert paging is not None and paging.page_param is not None
    if paging.type == "cursor":
        cursor = metadata.get("next_cursor")
        return cursor if cursor not in (None, "") else None  # a page may be empty after a record filter
    size = params.get(paging.size_param or "")
    if not records or (isinstance(size, int) and len(records) < size):
        return None
    current = params.get(paging.page_param, paging.start)
    if not isinstance(current, int):
        return None
    return current + len(records) if paging.type == "offset" else current + 1


def pager(binding: Binding, action: ActionSpec, params: Mapping[str, Any]) -> Pager[Record]:
    """The pager for a collection action: execute, or the stream query for a URL-paged stream list."""
    paging = action.paging
    if paging is None or paging.type not in ("link_header", "next_url") or not action.stream:
        return ExecutePager(binding.source.id, action, params)
    filters: dict[str, Any] = {}
    for name, value in params.items():
        if name == paging.size_param:
            filters["limit"] = value
        elif action.params[name].filter:
            filters[name] = value
        else:
            raise InvalidParameter(f"{action.where} pages through the stream query, which does not take "
                                   f"parameter '{name}'")
    return QueryPager(binding.source.id, action.entity, filters)


# --- the facades: attribute access over the binding, one sync and one async flavour -----------------------------

E = TypeVar("E")
A = TypeVar("A")


class _Facade(Generic[E]):
    """Entities as attributes (`facade.customers`), or `facade.entity("customers")`."""

    _entity_type: ClassVar[type[Any]]

    def __init__(self, runner: Any, binding: Binding) -> None:
        self._runner, self._binding = runner, binding

    @property
    def source(self) -> Source:
        return self._binding.source

    @property
    def entities(self) -> list[str]:
        return sorted(self._binding.entities)

    def entity(self, name: str) -> E:
        spec = self._binding.entities.get(name)
        if spec is None:
            valid = ", ".join(self.entities) or "(none)"
            raise UnknownEntity(f"{self._binding.connector} has no entity '{name}'; entities: {valid}")
        made: E = self._entity_type(self._runner, self._binding, spec)
        return made

    def __getattr__(self, name: str) -> E:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.entity(name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._binding.entities})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._binding.connector} source={self._binding.source.id}>"


class _Entity(Generic[A]):
    """Actions as attributes (`entity.list`), or `entity.action("list")`."""

    _action_type: ClassVar[type[Any]]

    def __init__(self, runner: Any, binding: Binding, spec: EntitySpec) -> None:
        self._runner, self._binding, self.spec = runner, binding, spec

    @property
    def actions(self) -> list[str]:
        return sorted(self.spec.actions)

    def action(self, name: str) -> A:
        spec = self.spec.actions.get(name)
        if spec is None:
            raise UnknownAction(f"{self.spec.name} has no action '{name}'; actions: {', '.join(self.actions)}")
        made: A = self._action_type(self._runner, self._binding, spec)
        return made

    def __getattr__(self, name: str) -> A:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.action(name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.spec.actions})


class ConnectorAction:
    def __init__(self, runner: SyncRunner, binding: Binding, spec: ActionSpec) -> None:
        self._runner, self._binding, self.spec = runner, binding, spec

    @property
    def params(self) -> list[str]:
        return sorted(self.spec.params)

    def __call__(self, **params: Any) -> Any:
        """A collection: an auto-paging iterator of records (`Paginator`). Otherwise: the result object."""
        values = self.spec.check(params)
        if self.spec.collection:
            return Paginator(self._runner, pager(self._binding, self.spec, values))
        op = execute_op(self._binding.source.id, self.spec.entity, self.spec.name, values,
                        idempotent=not self.spec.writes)
        return self._runner.run(op).result


class AsyncConnectorAction:
    def __init__(self, runner: AsyncRunner, binding: Binding, spec: ActionSpec) -> None:
        self._runner, self._binding, self.spec = runner, binding, spec

    @property
    def params(self) -> list[str]:
        return sorted(self.spec.params)

    def __call__(self, **params: Any) -> Any:
        """A collection: an `AsyncPaginator` of records (`async for`). Otherwise: an awaitable of the result."""
        values = self.spec.check(params)
        if self.spec.collection:
            return AsyncPaginator(self._runner, pager(self._binding, self.spec, values))
        return self._result(values)

    def _result(self, values: Mapping[str, Any]) -> Coroutine[Any, Any, Any]:
        async def run() -> Any:
            op = execute_op(self._binding.source.id, self.spec.entity, self.spec.name, values,
                            idempotent=not self.spec.writes)
            return (await self._runner.run(op)).result

        return run()


class ConnectorEntity(_Entity[ConnectorAction]):
    _action_type = ConnectorAction


class AsyncConnectorEntity(_Entity[AsyncConnectorAction]):
    _action_type = AsyncConnectorAction


class Connector(_Facade[ConnectorEntity]):
    """A connector bound to one source of a workspace; entities are attributes. Made by `Keyrelay.connector()`."""

    _entity_type = ConnectorEntity


class AsyncConnector(_Facade[AsyncConnectorEntity]):
    """The async flavour of `Connector`. Made by `await AsyncKeyrelay.connector()`."""

    _entity_type = AsyncConnectorEntity

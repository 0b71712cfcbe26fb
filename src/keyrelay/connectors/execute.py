"""Execute `{entity, action, params}` on a source (docs/connectors.md), and the stream query.

Both are thin: look the action up in the connector definition, validate params, call it through the pipeline
(`engine.call`), then shape the answer. Exactly one request-log row per call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyrelay.connectors import engine, extract, paging, params, shape
from keyrelay.connectors.cache import EntityCache, cache_key
from keyrelay.connectors.definition import Action, Entity
from keyrelay.connectors.pagetoken import PageTokens
from keyrelay.connectors.spec import ConnectorSpec
from keyrelay.errors import Forbidden, InvalidRequest, Unprocessable, UpstreamUnreachable
from keyrelay.model import Approved, ById, Door, Inbound, Scope, Source
from keyrelay.pipeline import approval
from keyrelay.pipeline.policy import API_CONNECTOR_KINDS, RULE_WRITES, Note, refuse
from keyrelay.pipeline.relay import Admitted, Describe, Exchange, Relay, Reply

ACTION_ALIASES = {"api_search": "search"}
_ABSENT = object()


@dataclass(frozen=True)
class ExecuteRequest:
    authorization: str | None
    source_id: str
    entity: str
    action: str
    params: Mapping[str, Any]
    select_fields: list[str] | None = None
    exclude_fields: list[str] | None = None
    skip_truncation: bool = True
    use_cache: bool = True
    door: Door = Door.EXECUTE
    path: str = ""
    ignore_unknown: bool = False  # Airbyte clients send params (e.g. `limit` from check()) some actions lack
    wait_seconds: float | None = None  # `Prefer: wait=N` when the call is parked for approval
    approved: Approved | None = None  # set only by the approval service (docs/approvals.md)

    def call(self, entity: str, action: str) -> dict[str, Any]:
        """The call as it is parked for approval (and run from, once approved)."""
        return {"entity": entity, "action": action, "params": dict(self.params), "select_fields": self.select_fields,
                "exclude_fields": self.exclude_fields, "skip_truncation": self.skip_truncation,
                "ignore_unknown": self.ignore_unknown}


def find_action(spec: ConnectorSpec, entity: str, action: str) -> tuple[Entity, Action]:
    ent = spec.entities.get(entity)
    if ent is None:
        valid = ", ".join(sorted(spec.entities)) or "(none)"
        raise Unprocessable(f"Unknown entity '{entity}' for {spec.name}; valid entities: {valid}", field="entity")
    act = ent.actions.get(ACTION_ALIASES.get(action, action))
    if act is None:
        valid = ", ".join(sorted(ent.actions))
        raise Unprocessable(f"Unknown action '{action}' for {entity}; valid actions: {valid}", field="action")
    return ent, act


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _meta_value(answer: engine.Answer, path: str) -> Any:
    """A body path, or `@link.<rel>` (a URL of the `Link` header) or `@header.<name>` (a response header)."""
    if path.startswith("@link."):
        return paging.link(answer.headers, path[len("@link."):])
    if path.startswith("@header."):
        wanted = path[len("@header."):].lower()
        return next((v for k, v in answer.headers.items() if k.lower() == wanted), None)
    return extract.get(answer.body, path)


def collection_metadata(act: Action, answer: engine.Answer, records: list[Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, path in act.metadata.items():
        _set_path(meta, key, _meta_value(answer, path))
    nxt = paging.next_state(act.pagination, body=answer.body, records=records, headers=answer.headers,
                            size=len(records), state={})
    if act.pagination.type == "cursor" and nxt is not None and "next_cursor" not in meta:
        meta["next_cursor"] = nxt["cursor"]
    return meta


class ConnectorService:
    def __init__(self, *, relay: Relay, catalog: Mapping[str, ConnectorSpec], tokens: PageTokens,
                 cache: EntityCache) -> None:
        self._relay, self._catalog, self._tokens, self._cache = relay, catalog, tokens, cache

    def _inbound(self, authorization: str | None, source_id: str, door: Door, scope: Scope, path: str,
                 req: ExecuteRequest | None = None) -> Inbound:
        return Inbound(door=door, method="POST", path=path, authorization=authorization, source=ById(source_id),
                       scope=scope, wait_seconds=None if req is None else req.wait_seconds,
                       approved=None if req is None else req.approved)

    async def execute(self, req: ExecuteRequest) -> dict[str, Any]:
        """Run one action; the pipeline admits it (`execute` scope) and records it once. An action the source's
        approval rule matches is parked instead: the answer is then `{"approval": {...}}` (`approval.is_parked`)."""
        inbound = self._inbound(req.authorization, req.source_id, req.door, Scope.EXECUTE, req.path, req)

        async def work(ex: Exchange) -> Reply:
            return Reply(value=await self._execute(ex, inbound, req))

        done = await self._relay.handle(inbound, kinds=API_CONNECTOR_KINDS, work=work, park=self._describe(req))
        out: dict[str, Any] = done.value
        return out

    def _describe(self, req: ExecuteRequest) -> Describe:
        """The call in its parked form (docs/approvals.md), checked as running it would be first: a call that would
        be refused is refused now, not after a human approved it."""
        async def describe(admitted: Admitted) -> approval.Parked:
            source = admitted.resolved.source
            ent, act = find_action(self._catalog[source.connector], req.entity, req.action)
            if admitted.caller.constraints:  # a narrowed token's `actions`, as running it would check them
                self._relay.guard.action(admitted.caller, f"{ent.name}.{act.name}", admitted.recorder)
            _check_writes(source, act, admitted.recorder.note)
            params.check_params(act, req.params, config=source.config, ignore_unknown=req.ignore_unknown)
            default = None if admitted.facts is None else admitted.facts.default_base_url
            bound = approval.base_destination(source, default)
            return approval.Parked(kind=approval.EXECUTE, method=act.method,
                                   path=approval.upstream_path(bound).rstrip("/") + act.path, destination=bound,
                                   action=f"{ent.name}.{act.name}", call=req.call(ent.name, act.name))

        return describe

    async def _execute(self, ex: Exchange, inbound: Inbound, req: ExecuteRequest) -> dict[str, Any]:
        started = time.monotonic()
        source = ex.source
        spec = self._catalog[source.connector]
        _, act = find_action(spec, req.entity, req.action)
        ex.check_action(req.entity, act.name)  # a narrowed token's `actions` (pipeline/guard.py)
        _check_writes(source, act, ex.admitted.recorder.note)
        values = params.check_params(act, req.params, config=source.config, ignore_unknown=req.ignore_unknown)
        ttl = source.policy.cache_ttl_seconds or 0
        key = cache_key(source.workspace_id, source.id, "execute", req.entity, act.name, values)
        cached = self._cache.get(key) if ttl and req.use_cache and not act.is_write else None
        if cached is not None:
            result, meta = cached
        else:
            answer = await engine.call(ex, inbound, act, params.place(act, values))
            result, meta = self._result(act, answer)
            if act.is_collection:
                result = self._kept(act, result)
            if ttl and not act.is_write:
                self._cache.put(key, (result, meta), ttl)
        if act.is_collection:
            result = [shape.shape(r, select=req.select_fields, exclude=req.exclude_fields) for r in result]
            if not req.skip_truncation:
                result = shape.truncate(result)
        else:
            result = shape.shape(result, select=req.select_fields, exclude=req.exclude_fields)
        return {"status": "success", "result": result, "connector_metadata": meta,
                "execution_metadata": {"connector_instance_id": source.id,
                                       "execution_time_ms": round((time.monotonic() - started) * 1000, 2)}}

    def _result(self, act: Action, answer: engine.Answer) -> tuple[Any, dict[str, Any]]:
        problem = extract.get(answer.body, act.error_path) if act.error_path else None
        if problem:
            message = extract.get(problem, "0.message") or extract.get(problem, "message") or "request failed"
            raise Unprocessable(f"The upstream API rejected the request: {str(message)[:300]}")
        if not act.is_collection:
            return extract.get(answer.body, act.record or ""), {}
        records = extract.get(answer.body, act.records or "")
        if records is None:
            records = []
        if not isinstance(records, list):
            raise UpstreamUnreachable("The upstream API answered with an unexpected shape")
        return records, collection_metadata(act, answer, records)

    @staticmethod
    def _kept(act: Action, records: list[Any]) -> list[Any]:
        """Records that pass the action's `record_filter` (applied after paging has looked at the page)."""
        if not act.record_filter:
            return records
        return [r for r in records
                if all(extract.get(r, path, _ABSENT) == want for path, want in act.record_filter.items())]

    def streams(self, spec: ConnectorSpec) -> list[dict[str, Any]]:
        out = []
        for ent in spec.entities.values():
            act = ent.actions.get("list")
            if act is None or not ent.stream:
                continue
            pag = act.pagination
            out.append({
                "name": ent.name, "description": ent.description, "schema": ent.schema or {"type": "object"},
                "filters": [{"name": p.name, "type": p.type, "description": p.description}
                            for p in act.params.values() if _is_filter(act, p.name)],
                "page_size": {"default": pag.default_size, "max": pag.max_size},
            })
        return out

    async def query(self, *, authorization: str | None, source_id: str, stream: Any, filters: Any,
                    page_token: Any, path: str, door: Door = Door.QUERY) -> dict[str, Any]:
        """One page of a stream; the pipeline admits it (`query` scope) and records it once."""
        inbound = self._inbound(authorization, source_id, door, Scope.QUERY, path)

        async def work(ex: Exchange) -> Reply:
            return Reply(value=await self._query(ex, inbound, stream, filters, page_token))

        done = await self._relay.handle(inbound, kinds=API_CONNECTOR_KINDS, work=work)
        out: dict[str, Any] = done.value
        return out

    async def _query(self, ex: Exchange, inbound: Inbound, stream: Any, filters: Any,
                     page_token: Any) -> dict[str, Any]:
        source = ex.source
        spec = self._catalog[source.connector]
        act, values, size, state = self._query_plan(spec, source.id, source.config, stream, filters, page_token)
        ex.check_action(stream, act.name)  # a stream is its entity's `list` action
        placed = params.place(act, values)
        for extra in (paging.size_param(act.pagination, size), paging.position_param(act.pagination, state)):
            if extra is None:
                continue
            name, location, value = extra
            if location == "query":
                placed.query.append((name, str(value)))
            else:
                params.set_nested(placed.body, name, value)  # GraphQL: `variables.after`
        answer = await engine.call(ex, inbound, act, placed, next_url=state.get("url"))
        records, _ = self._result(act, answer)
        nxt = paging.next_state(act.pagination, body=answer.body, records=records, headers=answer.headers,
                                size=size, state=state)
        token = None if nxt is None else self._tokens.issue(source_id=source.id, stream=stream,
                                                            filters=filters or {}, state=nxt)
        return {"records": self._kept(act, records), "next_page_token": token}

    def _query_plan(self, spec: ConnectorSpec, source_id: str, source_config: Mapping[str, Any], stream: Any,
                    filters: Any, page_token: Any) -> tuple[Action, dict[str, Any], int, dict[str, Any]]:
        names = sorted(e.name for e in spec.entities.values() if e.stream and "list" in e.actions)
        if not isinstance(stream, str) or stream not in names:
            raise Unprocessable(f"Unknown stream; valid streams: {', '.join(names) or '(none)'}", field="stream")
        act = spec.entities[stream].actions["list"]
        if filters is None:
            filters = {}
        if not isinstance(filters, dict):
            raise InvalidRequest("filters must be an object", field="filters")
        given = dict(filters)
        size = given.pop("limit", act.pagination.default_size)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= act.pagination.max_size:
            raise InvalidRequest(f"filters.limit must be an integer from 1 to {act.pagination.max_size}",
                                 field="filters.limit")
        allowed = sorted(p for p in act.params if _is_filter(act, p))
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise InvalidRequest(f"Unknown filter '{unknown[0]}'; allowed filters: limit, {', '.join(allowed)}",
                                 field=f"filters.{unknown[0]}")
        try:
            values = params.check_params(act, given, config=source_config)
        except Unprocessable as err:
            raise InvalidRequest(err.message, field=(err.field or "").replace("params.", "filters.")) from None
        state = {} if page_token is None else self._tokens.read(page_token, source_id=source_id, stream=stream,
                                                                filters=filters)
        return act, values, size, state


def _check_writes(source: Source, act: Action, note: Note) -> None:
    if act.is_write and not source.policy.allow_writes:
        refuse(source.policy, RULE_WRITES, Forbidden("This source is read-only: its policy does not allow writes"),
               note)


def _is_filter(act: Action, name: str) -> bool:
    p = act.params[name]
    pag = act.pagination
    return p.filter and p.location not in ("path", "none") and p.upstream not in (pag.param, pag.size_param)

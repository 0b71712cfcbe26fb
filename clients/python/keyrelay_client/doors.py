"""The front doors an agent uses: the request API, execute, the stream query, and the gateway's base URL.

* `request` is `POST /api/v1/sonar/apis/{source_id}/request`: a full upstream URL under the source's base URL;
  the upstream's status, headers and body come back inside a `RequestResult` (an upstream error is not raised).
* `execute` is `POST /api/v1/connectors/instances/{source_id}/execute` `{entity, action, params}`.
* `query` pages through `POST /v1/proxy/sources/{source_id}/query` by its `next_page_token`.
* `gateway_url` is `/api/{workspace_id}/proxy/{slug}/`, the base URL `Keyrelay.http()` gives its httpx client.

Retries: `request` is retried only for idempotent upstream methods, `execute` only for read actions, `query`
always (it only reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from keyrelay_client.admin import SourceRef, source_id
from keyrelay_client.calls import IDEMPOTENT_METHODS, Call, Operation, obj, path
from keyrelay_client.errors import UnexpectedResponse, UsageError
from keyrelay_client.models import ExecuteResult, Page, RequestResult

READ_ACTIONS = frozenset({"list", "get", "search", "api_search"})
_UNSET: Any = object()


def gateway_url(base_url: httpx.URL, workspace_id: str, slug: str) -> httpx.URL:
    prefix = base_url.raw_path.decode("ascii").split("?")[0].rstrip("/")
    return base_url.copy_with(raw_path=(prefix + path("api", workspace_id, "proxy", slug) + "/").encode("ascii"))


class DoorOps:
    def request(self, source: SourceRef, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: str | None = None, json: Any = _UNSET) -> Operation[RequestResult]:
        """Call the API behind `source`: `url` is a full URL under the source's base URL; keyrelay adds the stored
        credential. `body` is sent as is, `json` as JSON. The upstream's answer, whatever its status, is returned."""
        if body is not None and json is not _UNSET:
            raise UsageError("Pass body= or json=, not both")
        payload: dict[str, Any] = {"method": method.upper(), "url": url}
        if headers:
            payload["headers"] = dict(headers)
        if body is not None:
            payload["body"] = body
        elif json is not _UNSET:
            payload["body"] = json  # keyrelay sends it as JSON, with Content-Type: application/json unless set
        call = Call("POST", path("api", "v1", "sonar", "apis", source_id(source), "request"), json=payload,
                    idempotent=method.upper() in IDEMPOTENT_METHODS)
        return RequestResult.from_json(obj((yield call)))

    def execute(self, source: SourceRef, entity: str, action: str, params: Mapping[str, Any] | None = None, *,
                select_fields: Sequence[str] | None = None, exclude_fields: Sequence[str] | None = None,
                no_cache: bool = False) -> Operation[ExecuteResult]:
        """Run `action` on `entity` of a catalog API source (docs/connectors.md). Writes need the source's policy
        to allow them."""
        return (yield from execute_op(source_id(source), entity, action, params, select_fields=select_fields,
                                      exclude_fields=exclude_fields, no_cache=no_cache,
                                      idempotent=action in READ_ACTIONS))

    def query(self, source: SourceRef, stream: str, filters: Mapping[str, Any] | None = None) -> QueryPager:
        """Every record of `stream`, across pages. `filters` are the stream's filters; `filters["limit"]` sets the
        page size. Streams and their filters: `sources.streams(source)`."""
        return QueryPager(source_id(source), stream, dict(filters or {}))


def execute_op(sid: str, entity: str, action: str, params: Mapping[str, Any] | None, *,
               select_fields: Sequence[str] | None = None, exclude_fields: Sequence[str] | None = None,
               no_cache: bool = False, idempotent: bool) -> Operation[ExecuteResult]:
    body: dict[str, Any] = {"entity": entity, "action": action, "params": dict(params or {})}
    if select_fields is not None:
        body["select_fields"] = list(select_fields)
    if exclude_fields is not None:
        body["exclude_fields"] = list(exclude_fields)
    if no_cache:
        body["no_cache"] = True
    call = Call("POST", path("api", "v1", "connectors", "instances", sid, "execute"), json=body, idempotent=idempotent)
    return ExecuteResult.from_json(obj((yield call)))


@dataclass(frozen=True)
class QueryPager:
    source_id: str
    stream: str
    filters: dict[str, Any]

    def page(self, position: Any) -> Operation[Page[dict[str, Any]]]:
        body: dict[str, Any] = {"stream": self.stream, "filters": self.filters}
        if position is not None:
            body["page_token"] = position
        call = Call("POST", path("v1", "proxy", "sources", self.source_id, "query"), json=body, idempotent=True)
        found = obj((yield call))
        records, token = found.get("records"), found.get("next_page_token")
        if not isinstance(records, list) or not (token is None or isinstance(token, str)):
            raise UnexpectedResponse("The stream query answer has no records list")
        return Page(items=records, next=token or None)

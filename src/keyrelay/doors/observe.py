"""Health, readiness, Prometheus metrics, and the request log (list and live SSE stream)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.responses import StreamingResponse

from keyrelay.errors import InvalidRequest, NotFound
from keyrelay.http.deps import caller, need_scope, services
from keyrelay.http.render import event_view
from keyrelay.http.responses import json_response
from keyrelay.http.services import Services
from keyrelay.model import Caller, LogEntry, LogQuery, Scope

router = APIRouter(tags=["observability"])
Svc = Annotated[Services, Depends(services)]
AnyCaller = Annotated[Caller, Depends(caller)]
_KEEPALIVE_SECONDS = 15.0


def _visible_workspace(who: Caller, workspace_id: str | None) -> str | None:
    """The one workspace asked for (404 unless the caller reaches it), else the caller's own (None: every one the
    caller reaches, see `_reach`)."""
    need_scope(who, Scope.LOGS)
    if workspace_id is not None:
        if not who.can_reach(workspace_id):
            raise NotFound("Workspace not found")
        return workspace_id
    return who.workspace_id


def _reach(who: Caller) -> frozenset[str] | None:
    return None if who.workspace_id is not None else who.workspaces


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("since must be an ISO-8601 timestamp", field="since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@router.get("/api/v1/logs")
async def list_logs(
    svc: Svc, who: AnyCaller, workspace_id: str | None = None, source_id: str | None = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None, since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, approval_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    ws = _visible_workspace(who, workspace_id)
    rows = await svc.logs.query(LogQuery(workspace_id=ws, workspace_ids=_reach(who), source_id=source_id,
                                         status=status, since=_since(since), limit=limit, approval_id=approval_id))
    return json_response({"data": [event_view(e) for e in rows]})


@router.get("/api/v1/logs/stream")
async def stream_logs(request: Request, who: AnyCaller, workspace_id: str | None = None) -> Response:
    ws = _visible_workspace(who, workspace_id)
    reach = _reach(who)
    events = request.app.state.request_log

    async def frames() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        async with events.subscribe() as queue:
            while True:
                try:
                    e: LogEntry = await asyncio.wait_for(queue.get(), _KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if (ws is None or e.workspace_id == ws) and (reach is None or e.workspace_id in reach):
                    yield b"data: " + json.dumps(event_view(e)).encode() + b"\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})

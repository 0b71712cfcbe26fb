"""Live logs: the page (filters, the newest matching rows, a detail view per row) and its event stream,
`/console/logs/stream`, authenticated by the session cookie. The stream carries what `/api/v1/logs/stream`
carries (the request log's live feed, shared by every instance through Redis when scaled out), filtered by
workspace, source, door and status class, with workspace and source names added. It ends when the session
does (checked at every keep-alive).

As `/api/v1/logs`, both need the `logs` scope (not `admin`) and show the requests of the workspaces the signed-in
application reaches only; a limited application never sees requests logged for no workspace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from keyrelay.doors.console.session import SESSION_COOKIE, ConsoleRoute, Signed, parts
from keyrelay.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated
from keyrelay.http.render import event_view
from keyrelay.http.services import Services
from keyrelay.model import Caller, Door, LogEntry, Scope

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
KEEPALIVE_SECONDS = 15.0
STATUS_CLASSES = (2, 3, 4, 5)
DOORS = tuple(d.value for d in Door)
_MISSING_MAX = 10_000


@dataclass
class Names:
    """Workspace and source names by id, for log rows. An id it does not know makes it reload once: an id still
    unknown after that (a deleted source) is remembered, so a stream of such rows never reloads again."""

    workspaces: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)

    async def load(self, svc: Services, caller: Caller) -> Names:
        self.workspaces = {w.id: w.name for w in await svc.workspaces.list(None) if caller.can_reach(w.id)}
        self.sources = {s.id: s.name for s in await svc.sources.list_sources(caller, None)}
        return self

    async def learn(self, e: LogEntry, svc: Services, caller: Caller) -> None:
        """Reload if this entry names a workspace or source not seen before."""
        unknown = {i for i in (e.workspace_id, e.source_id) if i and i not in self.workspaces
                   and i not in self.sources} - self.missing
        if not unknown:
            return
        await self.load(svc, caller)
        if len(self.missing) > _MISSING_MAX:
            self.missing.clear()
        self.missing |= {i for i in unknown if i not in self.workspaces and i not in self.sources}

    def row(self, e: LogEntry) -> dict[str, Any]:
        """The request-log entry as the API shows it, plus the names of its workspace and source and the path
        without the gateway's `/api/<workspace id>/proxy` prefix (the row names the workspace already)."""
        return event_view(e) | {"workspace_name": self.workspaces.get(e.workspace_id or ""),
                                "source_name": self.sources.get(e.source_id or ""), "short_path": short_path(e)}


def short_path(e: LogEntry) -> str:
    prefix = f"/api/{e.workspace_id}/proxy/"
    return "\u2026/" + e.path[len(prefix):] if e.workspace_id and e.path.startswith(prefix) else e.path


@dataclass(frozen=True)
class Filters:
    workspace_id: str | None = None
    source_id: str | None = None
    door: str | None = None
    status_class: int | None = None

    @classmethod
    def of(cls, workspace_id: str | None, source_id: str | None, door: str | None, status: str | None) -> Filters:
        if door and door not in DOORS:
            raise InvalidRequest(f"door must be one of {', '.join(DOORS)}", field="door")
        status_class = None
        if status:
            if len(status) != 3 or not status.endswith("xx") or int(status[0]) not in STATUS_CLASSES:
                raise InvalidRequest("status must be 2xx, 3xx, 4xx or 5xx", field="status")
            status_class = int(status[0])
        return cls(workspace_id or None, source_id or None, door or None, status_class)

    def within(self, caller: Caller) -> Filters:
        """These filters, if the caller reaches the workspace they name (else 404, as for an unknown one)."""
        if self.workspace_id is not None and not caller.can_reach(self.workspace_id):
            raise NotFound("Workspace not found")
        return self

    def match(self, e: LogEntry) -> bool:
        return ((self.workspace_id is None or e.workspace_id == self.workspace_id)
                and (self.source_id is None or e.source_id == self.source_id)
                and (self.door is None or e.door == self.door)
                and (self.status_class is None or e.status // 100 == self.status_class))

    def query(self) -> str:
        pairs = [("workspace_id", self.workspace_id), ("source_id", self.source_id), ("door", self.door),
                 ("status", f"{self.status_class}xx" if self.status_class else None)]
        return urlencode([(k, v) for k, v in pairs if v])


NEEDS_LOGS = ("Live logs need an application holding the `logs` scope (as `/api/v1/logs` does); the application you "
              "signed in as does not hold it.")


def need_logs(caller: Caller) -> None:
    if Scope.LOGS not in caller.scopes:
        raise Forbidden(NEEDS_LOGS)


@router.get("/console/logs")
async def logs_page(c: Signed, workspace_id: str | None = None, source_id: str | None = None,
                    door: str | None = None, status: str | None = None) -> Response:
    need_logs(c.caller)
    filters = Filters.of(workspace_id, source_id, door, status).within(c.caller)
    names = await Names().load(c.svc, c.caller)
    rows = await c.traffic.recent(**asdict(filters), limit=100, workspace_ids=c.reach)
    sources = sorted(await c.svc.sources.list_sources(c.caller, None), key=lambda s: (names.workspaces.get(
        s.workspace_id, ""), s.name))
    return c.page("console/logs.html", nav="logs", filters=filters, rows=[names.row(e) for e in rows],
                  workspaces=sorted(names.workspaces.items(), key=lambda kv: kv[1]), sources=sources, names=names,
                  doors=DOORS, stream_url="/console/logs/stream?" + filters.query())


@router.get("/console/logs/stream")
async def stream(request: Request, workspace_id: str | None = None, source_id: str | None = None,
                 door: str | None = None, status: str | None = None) -> Response:
    svc, sessions, _, _ = parts(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await sessions.session(token, touch=False)
    if session is None:  # an event stream is read by a script: answer a status, not a redirect
        raise Unauthenticated("Sign in to the console first")
    caller = sessions.caller(session)
    need_logs(caller)
    filters = Filters.of(workspace_id, source_id, door, status).within(caller)
    reach = caller.workspaces
    names = await Names().load(svc, caller)
    feed = request.app.state.request_log

    async def frames() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        async with feed.subscribe() as queue:
            while True:
                try:
                    e: LogEntry = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    if await sessions.session(token, touch=False) is None:
                        yield b"event: ended\ndata: {}\n\n"
                        return
                    yield b": keep-alive\n\n"
                    continue
                if not filters.match(e) or (reach is not None and e.workspace_id not in reach):
                    continue
                await names.learn(e, svc, caller)
                yield b"data: " + json.dumps(names.row(e)).encode() + b"\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no",
                                      "x-content-type-options": "nosniff"})

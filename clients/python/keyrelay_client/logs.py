"""The request log: recent entries (`GET /api/v1/logs`) and the live feed (`GET /api/v1/logs/stream`, SSE).

Every caller needs the `logs` scope. An application token sees the workspaces its application reaches; an API key
or workspace token sees its own workspace (name it by id: looking a name up is an admin read).

`tail()` yields entries as keyrelay records them, until the server ends the stream or the caller stops iterating
(which closes the connection). keyrelay sends a keep-alive comment every 15 s, so the read timeout of
the feed (`read_timeout`, default 60 s) only fires when the connection is dead: it raises `RequestTimeout`, and a
dropped connection `ConnectionFailed`; nothing is retried once the feed has started.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx

from keyrelay_client.admin import SourceRef, WorkspaceRef, own_workspace_id, source_id
from keyrelay_client.calls import Call, Operation, items
from keyrelay_client.errors import UnexpectedResponse, UsageError
from keyrelay_client.models import LogEntry
from keyrelay_client.runner import network_error
from keyrelay_client.surface import AsyncResource, SyncResource, awaiting, blocking

STREAM_PATH = "/api/v1/logs/stream"


@dataclass
class SseDecoder:
    """Server-sent events, line by line: `feed(line)` returns an event's data when a blank line ends it."""

    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None  # a comment (keyrelay's ": connected" and ": keep-alive")
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def entry(data: str) -> LogEntry:
    try:
        found = json.loads(data)
    except ValueError:
        raise UnexpectedResponse("A log stream event is not JSON") from None
    if not isinstance(found, dict):
        raise UnexpectedResponse("A log stream event is not a JSON object")
    return LogEntry.from_json(found)


def _since(value: dt.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise UsageError("since needs a time zone, e.g. datetime.now(timezone.utc)")
    return value.isoformat()


class LogOps:
    def list(self, *, workspace: WorkspaceRef | None = None, source: SourceRef | None = None,
             status: int | None = None, since: dt.datetime | str | None = None,
             limit: int = 100) -> Operation[list[LogEntry]]:
        """The most recent entries (at most `limit`, 1 to 1000), optionally of one workspace, source or status."""
        params: dict[str, str | int] = {"limit": limit}
        if workspace is not None:
            params["workspace_id"] = yield from own_workspace_id(workspace)
        if source is not None:
            params["source_id"] = source_id(source)
        if status is not None:
            params["status"] = status
        when = _since(since)
        if when is not None:
            params["since"] = when
        return [LogEntry.from_json(e) for e in items((yield Call("GET", "/api/v1/logs", params=params)))]

    def tail_call(self, workspace: WorkspaceRef | None, read_timeout: float | None,
                  base: httpx.Timeout) -> Operation[Call]:
        params = None if workspace is None else {"workspace_id": (yield from own_workspace_id(workspace))}
        timeout = httpx.Timeout(connect=base.connect, read=read_timeout, write=base.write, pool=base.pool)
        return Call("GET", STREAM_PATH, params=params, headers={"Accept": "text/event-stream"}, timeout=timeout)


class Logs(SyncResource):
    _ops: LogOps
    list = blocking(LogOps.list)

    def tail(self, *, workspace: WorkspaceRef | None = None, read_timeout: float | None = 60.0) -> Iterator[LogEntry]:
        """Live entries as they are recorded; stop iterating (or close the iterator) to disconnect."""
        call = self._runner.run(self._ops.tail_call(workspace, read_timeout, self._runner.client.timeout))
        decoder = SseDecoder()
        with self._runner.open(call) as response:
            try:
                for line in response.iter_lines():
                    data = decoder.feed(line)
                    if data is not None:
                        yield entry(data)
            except httpx.RequestError as exc:
                raise network_error(exc, response.request)[0] from None


class AsyncLogs(AsyncResource):
    _ops: LogOps
    list = awaiting(LogOps.list)

    async def tail(self, *, workspace: WorkspaceRef | None = None,
                   read_timeout: float | None = 60.0) -> AsyncIterator[LogEntry]:
        """Live entries as they are recorded; stop iterating (or `aclose()` the iterator) to disconnect."""
        call = await self._runner.run(self._ops.tail_call(workspace, read_timeout, self._runner.client.timeout))
        decoder = SseDecoder()
        async with self._runner.open(call) as response:
            try:
                async for line in response.aiter_lines():
                    data = decoder.feed(line)
                    if data is not None:
                        yield entry(data)
            except httpx.RequestError as exc:
                raise network_error(exc, response.request)[0] from None

"""A scripted raw-socket upstream for sync tests: `asyncio.start_server` on its own event loop in a thread, whose
handler reads and writes exact bytes (a hostile or broken upstream that no HTTP framework would let us write).

    async def handler(conn: ScriptedConn) -> None:
        data = await conn.reader.read(65536)
        conn.writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")

    with ScriptedUpstream(handler) as up:   # up.url == "http://127.0.0.1:<port>"
        ...

Handlers are cancelled when the upstream stops; a handler's own exception is kept in `errors` and raised by
`__exit__`, so a broken script fails the test instead of passing silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self


@dataclass
class ScriptedConn:
    index: int  # 1-based, in accept order
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


Script = Callable[[ScriptedConn], Awaitable[None]]


class ScriptedUpstream:
    def __init__(self, script: Script) -> None:
        self._script = script
        self.port = 0
        self.connections = 0
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("scripted upstream did not start within 30s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(30)
        if self.errors and exc_info[0] is None:
            raise AssertionError(f"the scripted upstream failed: {self.errors!r}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[Any]] = set()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            self.connections += 1
            try:
                await self._script(ScriptedConn(self.connections, reader, writer))
            except asyncio.CancelledError:
                pass  # the upstream is stopping
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client went away mid-script
            except Exception as exc:
                self.errors.append(exc)
            finally:
                writer.close()

        server = await asyncio.start_server(accepted, "127.0.0.1", 0, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            await server.wait_closed()

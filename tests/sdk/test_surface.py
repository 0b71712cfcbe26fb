"""Operations become methods once: sync and async methods with the operation's name, docstring, signature and
types (checked by running mypy --strict on a caller)."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path

from keyrelay_client import AsyncKeyrelay, Keyrelay
from keyrelay_client.admin import WorkspaceOps, Workspaces
from keyrelay_client.surface import _Method

SDK = Path(__file__).resolve().parents[2] / "clients" / "python"

CALLER = '''
from keyrelay_client import AsyncKeyrelay, Keyrelay, Workspace
from keyrelay_client.paging import AsyncPaginator, Paginator

def sync_use(kr: Keyrelay) -> Workspace:
    reveal_type(kr.workspaces.create)
    files = kr.files.list("src", "reports/", page_size=10)
    reveal_type(files)
    return kr.workspaces.get("acme")

async def async_use(kr: AsyncKeyrelay) -> Workspace:
    reveal_type(kr.query("src", "customers"))
    return await kr.workspaces.create("acme")

def wrong(kr: Keyrelay) -> None:
    kr.workspaces.create(42)
'''


def test_methods_carry_name_doc_and_signature() -> None:
    kr = Keyrelay("http://127.0.0.1:1", token="krw_x", env={})
    akr = AsyncKeyrelay("http://127.0.0.1:1", token="krw_x", env={})
    try:
        for method in (kr.workspaces.create, akr.workspaces.create):
            assert method.__name__ == "create" and method.__doc__ == WorkspaceOps.create.__doc__
            assert list(inspect.signature(method).parameters) == ["name"]
        assert list(inspect.signature(kr.sources.create).parameters)[:3] == ["workspace", "connector", "name"]
        assert kr.workspaces.create is kr.workspaces.create  # bound once, then kept on the instance
        assert isinstance(Workspaces.__dict__["create"], _Method)
        assert inspect.iscoroutinefunction(akr.workspaces.create) is False  # it returns a coroutine object
        coro = akr.workspaces.list()
        assert inspect.iscoroutine(coro)
        coro.close()
    finally:
        kr.close()
        asyncio.run(akr.aclose())


def test_callers_are_type_checked(tmp_path: Path) -> None:
    caller = tmp_path / "caller.py"
    caller.write_text(CALLER)
    env = {**os.environ, "MYPYPATH": str(SDK)}
    command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
               "--config-file", os.devnull, str(caller)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False).stdout
    assert 'Revealed type is "def (name: str) -> keyrelay_client.models.Workspace"' in out, out
    assert 'Revealed type is "keyrelay_client.paging.Paginator[keyrelay_client.models.FileInfo]"' in out, out
    assert 'Revealed type is "keyrelay_client.paging.AsyncPaginator[dict[str, Any]]"' in out, out
    assert 'caller.py:16: error: Argument 1 has incompatible type "int"; expected "str"' in out, out
    assert out.count("error:") == 1, out

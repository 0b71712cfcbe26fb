"""`keyrelay mcp-stdio` (mcp_bridge.py): the stdio bridge, spawned as a real process and driven by the mcp SDK's
stdio client, forwards to a live keyrelay's /mcp; the server does the auth and logging (door "mcp")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client, StdioServerParameters

from keyrelay.cli import main
from keyrelay.mcp_bridge import BridgeError, bridge_server, remote
from support.keyrelay import Admin, KeyrelayServer
from support.mcp import log_rows, payload
from support.upstream import FakeUpstream

KEY = "sk_live_stdio_canary_Lm40"
KEYRELAY = str(Path(sys.executable).with_name("keyrelay"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    return {**env, **extra}


@pytest.fixture
def env(kr: KeyrelayServer, admin: Admin, upstream: FakeUpstream) -> dict[str, Any]:
    ws = admin.workspace("desk")
    src = admin.source(ws, upstream_url=upstream.url, slug="api",
                       credentials={"api_key": {"value": KEY, "header": "X-Api-Key"}})
    return {"ws": ws, "src": src["id"], "url": kr.url + "/mcp", "base": upstream.url,
            "key": admin.api_key(ws, ["mcp", "proxy"])}


async def test_the_bridge_forwards_tools_to_the_server(env: dict[str, Any], upstream: FakeUpstream,
                                                       admin: Admin) -> None:
    params = StdioServerParameters(command=KEYRELAY, args=["mcp-stdio", "--url", env["url"]],
                                   env=clean_env(KEYRELAY_MCP_TOKEN=env["key"]))
    async with Client(params, cache=None) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        res = await c.call_tool("apis_make_request", {"source_id": env["src"], "url": env["base"] + "/echo?b=1"})
        denied = await c.call_tool("apis_make_request", {"source_id": env["src"], "url": "https://evil.example/"})
    assert names[:3] == ["list_sources", "describe_source", "apis_make_request"]
    out = payload(res)
    assert not res.is_error and out["body"]["raw_path"] == "/echo?b=1" and KEY not in res.model_dump_json()
    assert denied.is_error and payload(denied)["error"]["code"] == "destination_not_allowed"
    assert upstream.requests[-1].header("X-Api-Key") == KEY
    rows = log_rows(admin, 3, door="mcp", workspace_id=env["ws"], timeout=1.0)
    assert len(rows) == 2 and {r["caller"].split(":")[0] for r in rows} == {"key"}


def test_a_refused_token_stops_the_bridge_with_keyrelays_error(env: dict[str, Any], admin: Admin) -> None:
    no_mcp = admin.api_key(env["ws"], ["proxy"])
    p = subprocess.run([KEYRELAY, "mcp-stdio", "--url", env["url"], "--token", no_mcp], input="",
                       capture_output=True, text=True, timeout=60, env=clean_env(), check=False)
    assert p.returncode == 1 and p.stdout == "", p.stderr
    assert "refused the token (forbidden: Token lacks the 'mcp' scope)" in p.stderr and no_mcp not in p.stderr


def test_no_token_is_refused_before_connecting() -> None:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("KEYRELAY_")}
    result = CliRunner().invoke(main, ["mcp-stdio", "--url", "http://127.0.0.1:9/mcp"], env=unset)
    assert result.exit_code == 1 and "no token" in result.output


async def test_remote_fails_at_start_with_keyrelays_own_error(env: dict[str, Any]) -> None:
    with pytest.raises(BridgeError, match="unauthenticated") as err:
        async with remote(env["url"], "kr_" + "x" * 43):
            pass
    assert "kr_xxx" not in str(err.value)


async def test_remote_names_only_the_kind_of_failure_when_unreachable() -> None:
    with socket.socket() as s:  # bound, never listening: refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/mcp"
        with pytest.raises(BridgeError, match=r"cannot reach .* \(\w+\)"):
            async with remote(url, "kr_" + "y" * 43):
                pass


async def test_the_bridge_server_mirrors_the_remote(env: dict[str, Any]) -> None:
    async with remote(env["url"], env["key"]) as client:
        server = bridge_server(client)
        assert server.name == "keyrelay" and server.instructions == client.instructions

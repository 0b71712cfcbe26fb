"""Request budgets are exact: 3N concurrent requests against a budget of N reach the upstream exactly N times, on
two instances sharing PostgreSQL and Redis, and on the embedded default (one SQLite file); a child token's requests
spend its parent's budget too (docs/security.md: narrow tokens)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from support.keyrelay import Admin, KeyrelayServer, scaled_out_pair
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.upstream import FakeUpstream

N = 20


async def _burst(urls: list[str], token: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=3 * N)) as http:
        return await asyncio.gather(*(http.get(u, headers={"Authorization": f"Bearer {token}"}) for u in urls))


def _budget_key(admin: Admin, ws: str, requests: int) -> str:
    r = admin.post("/api/v1/api-keys", {"workspace_id": ws, "scopes": ["proxy"],
                                        "constraints": {"budget": {"requests": requests, "per": None}}})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def _counted(responses: list[httpx.Response]) -> tuple[int, int]:
    ok = sum(r.status_code == 200 for r in responses)
    spent = sum(r.status_code == 403 and r.json()["error"]["constraint"] == "budget" for r in responses)
    return ok, spent


def test_a_budget_is_exact_across_two_instances(tmp_path: Path, postgres: PostgresServer,
                                                 redis_server: RedisServer, upstream: FakeUpstream) -> None:
    with scaled_out_pair(tmp_path, postgres, redis_server.url) as (one, two):
        admin = Admin(one.url)
        ws = admin.workspace("budgets")
        admin.source(ws, upstream_url=upstream.url)
        key = _budget_key(admin, ws, N)
        upstream.clear()
        urls = [f"{kr.url}/api/{ws}/proxy/echo/echo" for kr in (one, two) for _ in range(3 * N // 2)]
        responses = asyncio.run(_burst(urls, key))
        assert _counted(responses) == (N, 2 * N)
        assert len(upstream.requests) == N

        parent = _budget_key(admin, ws, N)
        child = httpx.post(one.url + "/api/v1/tokens/attenuate", headers={"Authorization": f"Bearer {parent}"},
                           json={"constraints": {"budget": {"requests": N // 4, "per": None}}}).json()["token"]
        upstream.clear()

        half = urls[: 3 * N // 2] + urls[-(3 * N // 2):]
        child_ok, _ = _counted(asyncio.run(_burst(half, child)))
        assert child_ok == N // 4  # its own budget, exactly, on both instances (the parent had room for more)

        async def both() -> tuple[list[httpx.Response], list[httpx.Response]]:
            a, b = await asyncio.gather(_burst(half[::2], child), _burst(half[1::2], parent))
            return a, b

        by_child, by_parent = asyncio.run(both())
        assert _counted(by_child)[0] == 0  # spent
        parent_ok, _ = _counted(by_parent)
        assert child_ok + parent_ok == N  # the child's requests spent the parent's budget too
        assert len(upstream.requests) == N
        admin.close()


def test_a_budget_is_exact_on_the_embedded_default(kr: KeyrelayServer, admin: Admin,
                                                   upstream: FakeUpstream) -> None:
    ws = admin.workspace("budgets")
    admin.source(ws, upstream_url=upstream.url)
    key = _budget_key(admin, ws, N)
    upstream.clear()
    responses = asyncio.run(_burst([f"{kr.url}/api/{ws}/proxy/echo/echo"] * (3 * N), key))
    assert _counted(responses) == (N, 2 * N)
    assert len(upstream.requests) == N

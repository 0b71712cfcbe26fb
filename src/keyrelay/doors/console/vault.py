"""The vault: sealed or not (and why), the key ring (key ids, active or retired, how many credential fields each
one seals; never key material), and online rotation, as `keyrelay vault rotate` does it. The key ring serves every
workspace, so these pages need an application holding `admin` that reaches every workspace."""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyrelay.doors.console.session import Console, ConsoleRoute, Managing

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


async def _page(c: Console, *, notice: str | None = None) -> Response:
    c.need_every_workspace("The vault")
    return c.page("console/vault.html", nav="vault", vault=await c.sessions.vault_status(), notice=notice)


@router.get("/console/vault")
async def vault_page(c: Managing) -> Response:
    return await _page(c)


@router.post("/console/vault/rotate")
async def rotate(c: Managing) -> Response:
    c.need_every_workspace("The vault")
    await c.form("vault.rotate")
    count = await c.sessions.rotate_vault()
    return await _page(c, notice=f"Rotated: {count} credential field(s) re-encrypted under the new key.")

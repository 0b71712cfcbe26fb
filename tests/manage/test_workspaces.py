"""Workspaces (manage/workspaces.py) on the real store: names are checked, found by name, and a workspace is
invisible to callers of another workspace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyrelay.errors import InvalidRequest, NotFound
from keyrelay.manage.workspaces import NAME_MAX, check_name
from keyrelay.model import ALL_SCOPES, Caller, CallerKind
from support.pipeline import ADMIN, Pipeline, assembled


@pytest.fixture
async def p(tmp_path: Path) -> AsyncIterator[Pipeline]:
    async with assembled(tmp_path) as pipe:
        yield pipe


@pytest.mark.parametrize("name", ["", "   ", "x" * (NAME_MAX + 1), "a\nb", "tab\there", None, 5, ["a"]])
def test_a_bad_name_is_refused_naming_the_field(name: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_name(name, "workspace_name")
    assert err.value.field == "workspace_name"


def test_a_name_is_trimmed() -> None:
    assert check_name("  Acme Corp ") == "Acme Corp"
    assert check_name("x" * NAME_MAX) == "x" * NAME_MAX


async def test_named_finds_or_creates_exactly_one_workspace(p: Pipeline) -> None:
    with pytest.raises(NotFound):
        await p.workspaces.named("acme", create=False)
    made = await p.workspaces.named("acme", create=True)
    again = await p.workspaces.named(" acme ", create=True)
    assert again.id == made.id and again.name == "acme"
    assert (await p.workspaces.named("acme", create=False)).id == made.id


async def test_create_records_the_time_from_the_clock(p: Pipeline) -> None:
    ws = await p.workspaces.create("timed")
    assert ws.created_at == p.clock.now


async def test_a_workspace_is_visible_to_admins_and_its_own_callers_only(p: Pipeline) -> None:
    mine = await p.workspaces.create("mine")
    other = await p.workspaces.create("other")
    caller = Caller(kind=CallerKind.WORKSPACE, id=f"wst:app:{mine.id}", workspace_id=mine.id, scopes=ALL_SCOPES)
    assert (await p.workspaces.get(caller, mine.id)).id == mine.id
    assert (await p.workspaces.get(ADMIN, other.id)).id == other.id
    with pytest.raises(NotFound):
        await p.workspaces.get(caller, other.id)  # another tenant's workspace looks like no workspace
    with pytest.raises(NotFound):
        await p.workspaces.get(ADMIN, "no-such-id")

"""Approval rows (docs/approvals.md): parked requests, their decisions and kept responses.

Every status change is one conditional UPDATE (`transition`): whichever instance's statement matches first moves
the row, every other one changes nothing and learns it lost. That is what makes a decision, an execution and a
fetch happen once, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.model import Approval, ApprovalStatus, Scope, SealedRecord
from keyrelay.store.tables import approvals

_CHANGEABLE = frozenset({"decided_at", "decided_by", "executed_at", "upstream_status", "error_code", "error_message",
                         "result_expires_at", "fetched_at", "link_digest"})


def _row(r: Any) -> Approval:
    return Approval(
        id=r.id, workspace_id=r.workspace_id, source_id=r.source_id, door=r.door, caller=r.caller,
        caller_kind=r.caller_kind, caller_scopes=frozenset(Scope(s) for s in r.caller_scopes.split() if s in
                                                           Scope.__members__.values()),
        method=r.method, path=r.path, action=r.action, request_hash=r.request_hash,
        request=SealedRecord(r.request_key_id, bytes(r.request)), body_bytes=r.body_bytes,
        status=ApprovalStatus(r.status),
        created_at=r.created_at, expires_at=r.expires_at, link_digest=r.link_digest, decided_at=r.decided_at,
        decided_by=r.decided_by, executed_at=r.executed_at, upstream_status=r.upstream_status,
        error_code=r.error_code, error_message=r.error_message,
        result=None if r.result is None else SealedRecord(r.result_key_id, bytes(r.result)),
        result_expires_at=r.result_expires_at, fetched_at=r.fetched_at,
    )


class SqlApprovalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, a: Approval) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(approvals).values(
                id=a.id, workspace_id=a.workspace_id, source_id=a.source_id, door=a.door, caller=a.caller,
                caller_kind=a.caller_kind, caller_scopes=" ".join(sorted(a.caller_scopes)), method=a.method,
                path=a.path, action=a.action, request_hash=a.request_hash, request_key_id=a.request.key_id,
                request=a.request.blob, body_bytes=a.body_bytes, status=a.status.value, created_at=a.created_at,
                expires_at=a.expires_at, link_digest=a.link_digest))

    async def get(self, approval_id: str) -> Approval | None:
        return await self._one(approvals.c.id == approval_id)

    async def by_link(self, digest: str) -> Approval | None:
        return await self._one(approvals.c.link_digest == digest)

    async def _one(self, where: sa.ColumnElement[bool]) -> Approval | None:
        async with self._engine.connect() as conn:
            r = (await conn.execute(sa.select(approvals).where(where))).first()
        return None if r is None else _row(r)

    async def list_approvals(self, *, workspace_id: str | None, status: ApprovalStatus | None, now: float,
                   limit: int) -> list[Approval]:
        q = sa.select(approvals).order_by(approvals.c.created_at.desc()).limit(max(1, min(limit, 1000)))
        if workspace_id is not None:
            q = q.where(approvals.c.workspace_id == workspace_id)
        if status is ApprovalStatus.PENDING:  # one past its expiry is expired, whether swept yet or not
            q = q.where(approvals.c.status == status.value, approvals.c.expires_at > now)
        elif status is ApprovalStatus.EXPIRED:
            q = q.where(sa.or_(approvals.c.status == status.value, sa.and_(
                approvals.c.status == ApprovalStatus.PENDING.value, approvals.c.expires_at <= now)))
        elif status is not None:
            q = q.where(approvals.c.status == status.value)
        async with self._engine.connect() as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def count_pending(self, workspace_id: str, *, now: float) -> int:
        q = sa.select(sa.func.count()).select_from(approvals).where(
            approvals.c.workspace_id == workspace_id, approvals.c.status == ApprovalStatus.PENDING.value,
            approvals.c.expires_at > now)
        async with self._engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def transition(self, approval_id: str, *, frm: ApprovalStatus, to: ApprovalStatus,
                         changes: Mapping[str, Any], before: float | None = None,
                         after: float | None = None) -> bool:
        values: dict[str, Any] = {"status": to.value}
        for name, value in changes.items():
            if name == "result":
                sealed: SealedRecord | None = value
                values["result"] = None if sealed is None else sealed.blob
                values["result_key_id"] = None if sealed is None else sealed.key_id
            elif name in _CHANGEABLE:
                values[name] = value
            else:
                raise ValueError(f"approvals.{name} cannot change")
        q = sa.update(approvals).where(approvals.c.id == approval_id, approvals.c.status == frm.value)
        if after is not None:
            q = q.where(approvals.c.expires_at > after)
        if before is not None:
            q = q.where(approvals.c.expires_at <= before)
        async with self._engine.begin() as conn:
            res = await conn.execute(q.values(**values))
        return bool(res.rowcount == 1)

    async def take_result(self, approval_id: str, *, now: float) -> SealedRecord | None:
        """Claim the kept response (the first UPDATE: only one transaction can match it), read it and forget it,
        in one transaction."""
        async with self._engine.begin() as conn:
            claimed = await conn.execute(sa.update(approvals).where(
                approvals.c.id == approval_id, approvals.c.fetched_at.is_(None), approvals.c.result.is_not(None),
                approvals.c.result_expires_at > now).values(fetched_at=now))
            if claimed.rowcount != 1:
                return None
            r = (await conn.execute(sa.select(approvals.c.result_key_id, approvals.c.result)
                                    .where(approvals.c.id == approval_id))).one()
            await conn.execute(sa.update(approvals).where(approvals.c.id == approval_id)
                               .values(result=None, result_key_id=None))
        return SealedRecord(r.result_key_id, bytes(r.result))

    async def due(self, *, now: float, executing_before: float, limit: int) -> list[Approval]:
        q = sa.select(approvals).where(sa.or_(
            sa.and_(approvals.c.status == ApprovalStatus.PENDING.value, approvals.c.expires_at <= now),
            sa.and_(approvals.c.status == ApprovalStatus.EXECUTING.value, approvals.c.decided_at < executing_before),
        )).limit(limit)
        async with self._engine.connect() as conn:
            return [_row(r) for r in await conn.execute(q)]

    async def drop_results(self, *, now: float) -> int:
        """Forget kept responses past their expiry."""
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.update(approvals).where(
                approvals.c.result.is_not(None), approvals.c.result_expires_at <= now,
            ).values(result=None, result_key_id=None))
        return int(res.rowcount or 0)

    async def purge(self, *, before: float) -> int:
        """Delete approvals that ended (or were created, if they never could end) before `before`."""
        ended = [s.value for s in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED, ApprovalStatus.DENIED,
                                   ApprovalStatus.EXPIRED)]
        async with self._engine.begin() as conn:
            res = await conn.execute(sa.delete(approvals).where(
                approvals.c.status.in_(ended), approvals.c.created_at < before, approvals.c.result.is_(None)))
        return int(res.rowcount or 0)

"""Request budgets of narrowed tokens, counted in the database every instance shares, spent from local leases.

The database holds one counter row per (budget, window): `used` never passes the budget's limit, because every
change is one conditional statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE used + n <= limit RETURNING
used`). The database serialises writers on the row (PostgreSQL re-checks the condition on the row it locked; SQLite
has one writer at a time, across processes sharing the file). A chain's budgets are reserved in one transaction:
all or none. Rows are taken in the chain's order (root first), the same order for every chain, so two transactions
never deadlock.

A process does not write once per request: `BudgetLeases` reserves a block of units and spends it in memory.
The block is 1/256 of what was left when the counter was last seen (at most 1,024, at least 1), so a budget
with fewer than 512 requests left is counted request by request and is exact across instances; a larger one
costs one write per block. Units a process reserved but did not spend go back to the counter once its lease is
idle for `idle_seconds` and when the process stops. A process that dies keeps them spent: a budget is never
exceeded, and can at worst fall short by what a dead process held (docs/security.md: narrow tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.ports import Clock
from keyrelay.store.tables import budget_counters as t

log = logging.getLogger(__name__)

SHARE = 256  # a block is this fraction of what is left
MAX_BLOCK = 1024


class _Spent(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class SqlBudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        n = sa.bindparam("n", type_=sa.Integer)
        stmt = insert(t).values(key=sa.bindparam("key"), bucket=sa.bindparam("bucket"), used=n)
        stmt = stmt.on_conflict_do_update(index_elements=[t.c.key, t.c.bucket], set_={"used": t.c.used + n},
                                          where=t.c.used + n <= sa.bindparam("limit"))
        # compiled once and sent at the driver level, like the request log's batch insert: SQLAlchemy's
        # per-statement work cost more than the database write itself
        compiled = stmt.returning(t.c.used).compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._order = compiled.positiontup or ["key", "bucket", "n", "n", "limit"]
        back = sa.update(t).where(t.c.key == sa.bindparam("k"), t.c.bucket == sa.bindparam("b"),
                                  t.c.used >= sa.bindparam("n")).values(used=t.c.used - sa.bindparam("n"))
        compiled = back.compile(dialect=engine.dialect)
        self._back_sql = str(compiled)
        self._back_order = compiled.positiontup or ["n", "k", "b", "n"]

    async def reserve(self, wants: Sequence[tuple[str, int, int, int]]) -> list[tuple[int, int]] | str:
        """Reserve `n` units of every (key, window, limit, n) at once (one unit where fewer than `n` are left), or
        none: returns (units reserved, counter after) per budget, or the key of a budget that is spent."""
        got: list[tuple[int, int]] = []
        try:
            async with self._engine.begin() as conn:
                for key, bucket, limit, n in wants:
                    for size in (min(n, limit), 1) if n > 1 else (1,):
                        values: dict[str, object] = {"key": key, "bucket": bucket, "limit": limit, "n": size}
                        row = (await conn.exec_driver_sql(self._sql, tuple(values[p] for p in self._order))).first()
                        if row is not None:
                            got.append((size, int(row[0])))
                            break
                    else:
                        raise _Spent(key)  # rolls back what this transaction reserved
        except _Spent as spent:
            return spent.key
        return got

    async def consume(self, budgets: Sequence[tuple[str, int, int]]) -> str | None:
        """Count one request against every (key, window, limit), or against none: None, or a spent budget's key."""
        got = await self.reserve([(key, bucket, limit, 1) for key, bucket, limit in budgets])
        return got if isinstance(got, str) else None

    async def release(self, units: Sequence[tuple[str, int, int]]) -> None:
        """Give back reserved units nobody spent: (key, window, units)."""
        async with self._engine.begin() as conn:
            for key, bucket, n in units:
                values = {"k": key, "b": bucket, "n": n}
                await conn.exec_driver_sql(self._back_sql, tuple(values[p] for p in self._back_order))

    async def used(self, key: str, bucket: int) -> int:
        """How many units are counted, spent or reserved (for operators and tests)."""
        q = sa.select(t.c.used).where(t.c.key == key, t.c.bucket == bucket)
        async with self._engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one_or_none() or 0)


@dataclass
class _Lease:
    left: int = 0  # units reserved in the database and not yet spent here
    seen: int = 0  # the counter's value when this process last wrote it
    touched: float = 0.0


def block(limit: int, seen: int) -> int:
    return max(1, min(MAX_BLOCK, (limit - seen) // SHARE))


class BudgetLeases:
    """The `BudgetStore` the pipeline uses: spends units reserved in blocks, reserving more when a lease runs dry."""

    def __init__(self, store: SqlBudgetStore, clock: Clock, *, idle_seconds: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self._idle = idle_seconds
        self._leases: dict[tuple[str, int], _Lease] = {}

    def spend_here(self, budgets: Sequence[tuple[str, int, int]]) -> bool:
        if len(budgets) == 1:  # the common chain: one budget
            key, bucket, _ = budgets[0]
            one = self._leases.get((key, bucket))
            if one is None or one.left <= 0:
                return False
            one.left -= 1
            one.touched = self._clock()
            return True
        leases = [self._leases.get((key, bucket)) for key, bucket, _ in budgets]
        if not all(lease is not None and lease.left > 0 for lease in leases):
            return False
        now = self._clock()
        for lease in leases:
            assert lease is not None
            lease.left -= 1
            lease.touched = now
        return True

    async def consume(self, budgets: Sequence[tuple[str, int, int]]) -> str | None:
        now = self._clock()
        taken: list[_Lease] = []
        short: list[tuple[str, int, int]] = []
        for key, bucket, limit in budgets:  # spend what is here at once, so no other request can take it
            lease = self._leases.get((key, bucket))
            if lease is not None and lease.left > 0:
                lease.left -= 1
                lease.touched = now
                taken.append(lease)
            else:
                short.append((key, bucket, limit))
        if not short:
            return None
        wants = [(key, bucket, limit, block(limit, self._seen(key, bucket))) for key, bucket, limit in short]
        try:
            got = await self._store.reserve(wants)
        except BaseException:
            self._give_back(taken)
            raise
        if isinstance(got, str):
            self._give_back(taken)
            return got
        for (key, bucket, _), (units, seen) in zip(short, got, strict=True):
            lease = self._leases.setdefault((key, bucket), _Lease())
            lease.left += units - 1  # one of them is this request's
            lease.seen = max(lease.seen, seen)
            lease.touched = now
        return None

    def _seen(self, key: str, bucket: int) -> int:
        lease = self._leases.get((key, bucket))
        return 0 if lease is None else lease.seen

    @staticmethod
    def _give_back(taken: list[_Lease]) -> None:
        for lease in taken:
            lease.left += 1

    async def release_idle(self) -> None:
        """Give back the units of every lease nobody spent from for `idle_seconds`."""
        cutoff = self._clock() - self._idle
        await self._release([k for k, lease in self._leases.items() if lease.touched <= cutoff])

    async def release_all(self) -> None:
        await self._release(list(self._leases))

    async def _release(self, keys: list[tuple[str, int]]) -> None:
        units = [(key, bucket, lease.left) for key, bucket in keys
                 if (lease := self._leases.pop((key, bucket))).left > 0]  # gone before the await: never spent twice
        if units:
            await self._store.release(units)

    async def run(self, stop: asyncio.Event) -> None:
        """Give back idle leases every `idle_seconds` until `stop`, then every lease."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._idle)
            await self._quietly(self.release_idle())
        await self._quietly(self.release_all())

    @staticmethod
    async def _quietly(release: Awaitable[None]) -> None:
        try:
            await release
        except Exception as exc:  # the units stay counted: the budget is never exceeded
            log.warning("returning unspent budget units failed: %s", type(exc).__name__)

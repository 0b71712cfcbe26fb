"""Request budgets of narrowed tokens, counted in the database every instance shares.

One statement per budget: insert the counter at 1, or add 1 if it is still below the limit
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE used < limit RETURNING used`). The database serialises writers on
the counter's row (PostgreSQL re-checks the condition on the row it locked; SQLite has one writer at a time, across
processes sharing the file), so N concurrent requests against a budget of N are all counted and the next is
refused, exactly, on one process or many. A chain's budgets are counted in one transaction: all or none. Rows are
taken in the chain's order (root first), the same order for every chain, so two transactions never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from keyrelay.store.tables import budget_counters as t


class _Spent(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class SqlBudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        one: sa.ColumnClause[int] = sa.literal_column("1")
        stmt = insert(t).values(key=sa.bindparam("key"), bucket=sa.bindparam("bucket"), used=one)
        stmt = stmt.on_conflict_do_update(index_elements=[t.c.key, t.c.bucket], set_={"used": t.c.used + one},
                                          where=t.c.used < sa.bindparam("limit"))
        # compiled once and sent at the driver level, like the request log's batch insert: SQLAlchemy's
        # per-statement work cost more than the database write itself
        compiled = stmt.returning(t.c.used).compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._order = compiled.positiontup or ["key", "bucket", "limit"]

    async def consume(self, budgets: Sequence[tuple[str, int, int]]) -> str | None:
        try:
            async with self._engine.begin() as conn:
                for key, bucket, limit in budgets:
                    values = {"key": key, "bucket": bucket, "limit": limit}
                    res = await conn.exec_driver_sql(self._sql, tuple(values[n] for n in self._order))
                    if res.first() is None:
                        raise _Spent(key)  # rolls back what this transaction counted
        except _Spent as spent:
            return spent.key
        return None

    async def used(self, key: str, bucket: int) -> int:
        """How many requests were counted (for operators and tests)."""
        q = sa.select(t.c.used).where(t.c.key == key, t.c.bucket == bucket)
        async with self._engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one_or_none() or 0)

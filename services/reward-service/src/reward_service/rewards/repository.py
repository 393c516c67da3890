"""SQL of reading rewards and cap usage. Functions take the caller's connection: the edge owns
the transaction; nothing here commits."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page


@dataclass(frozen=True)
class RewardFilter:
    program_id: str | None = None
    advocate_id: str | None = None
    holder_id: str | None = None
    conversion_id: str | None = None
    state: str | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def reward_page(
    conn: asyncpg.Connection, tenant_id: str, f: RewardFilter, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id)
    where.maybe("program_id = {}", f.program_id).maybe("advocate_id = {}", f.advocate_id)
    where.maybe("holder_id = {}", f.holder_id).maybe("conversion_id = {}", f.conversion_id)
    where.maybe("state = {}", f.state)
    f.created.apply(where)
    return await fetch_page(conn, "SELECT * FROM rewards", where, page)


async def program_spent(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, unit: str
) -> int:
    """The program's spend in `unit` (read only: earning's program_spent locks the row)."""
    spent: int | None = await conn.fetchval(
        "SELECT spent FROM program_spend WHERE tenant_id = $1 AND program_id = $2 AND unit = $3",
        tenant_id,
        program_id,
        unit,
    )
    return spent or 0

"""SQL of the dev clock's audit. Functions take the caller's connection."""

from __future__ import annotations

import asyncpg


async def record_move(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    key_id: str,
    advance_ms: int,
    offset_ms: int,
    released: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO dev_clock_moves (tenant_id, key_id, advance_ms, offset_ms, released)
        VALUES ($1, $2, $3, $4, $5)
        """,
        tenant_id,
        key_id,
        advance_ms,
        offset_ms,
        released,
    )


async def recent_moves(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM dev_clock_moves ORDER BY seq DESC LIMIT $1", limit))

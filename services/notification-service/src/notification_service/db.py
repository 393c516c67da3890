"""What the repositories of both features share."""

from __future__ import annotations

import asyncpg


async def any_row(conn: asyncpg.Connection, sql: str, *args: object) -> bool:
    """Whether a statement that returns `true` for each row it finds or changes (`SELECT true`,
    `RETURNING true`) found or changed one."""
    return bool(await conn.fetchval(sql, *args))

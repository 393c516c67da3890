"""SQL of click retention. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg


async def program_settings(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT program_id, settings FROM program_settings"))


async def delete_clicks(
    conn: asyncpg.Connection,
    before_by_program: Mapping[str, datetime],
    before_otherwise: datetime,
    limit: int,
) -> int:
    """Deletes at most `limit` clicks made before their program's cutoff (`before_otherwise`
    for programs not named), skipping rows another replica holds. Returns how many."""
    latest = max([before_otherwise, *before_by_program.values()])
    done: str = await conn.execute(
        """
        WITH cut AS (
            SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS c(program_id, before)
        ), old AS (
            SELECT k.id FROM clicks k LEFT JOIN cut ON cut.program_id = k.program_id
            WHERE k.clicked_at < $4 AND k.clicked_at < coalesce(cut.before, $3)
            LIMIT $5
            FOR UPDATE OF k SKIP LOCKED
        )
        DELETE FROM clicks k USING old WHERE k.id = old.id
        """,
        list(before_by_program),
        list(before_by_program.values()),
        before_otherwise,
        latest,
        limit,
    )
    return int(done.split()[-1])

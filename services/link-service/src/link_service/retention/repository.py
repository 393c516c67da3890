"""SQL of click retention. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def roll_up_clicks(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Deletes at most `limit` clicks made before `before`, adding them to click_days in the
    same statement (rows another replica holds are skipped). Returns how many."""
    deleted: int = await conn.fetchval(
        """
        WITH old AS (
            SELECT id FROM clicks WHERE clicked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM clicks k USING old WHERE k.id = old.id
            RETURNING k.advocate_id, k.tenant_id, k.program_id, k.clicked_at, k.is_bot,
                      k.counts
        ), rolled AS (
            INSERT INTO click_days (advocate_id, day, tenant_id, program_id, human, counted,
                                    bots)
            SELECT advocate_id, (clicked_at AT TIME ZONE 'UTC')::date, min(tenant_id),
                   min(program_id), count(*) FILTER (WHERE NOT is_bot),
                   count(*) FILTER (WHERE counts AND NOT is_bot), count(*) FILTER (WHERE is_bot)
            FROM gone
            GROUP BY advocate_id, (clicked_at AT TIME ZONE 'UTC')::date
            ON CONFLICT (advocate_id, day) DO UPDATE
            SET human = click_days.human + EXCLUDED.human,
                counted = click_days.counted + EXCLUDED.counted,
                bots = click_days.bots + EXCLUDED.bots
        )
        SELECT count(*) FROM gone
        """,
        before,
        limit,
    )
    return deleted

"""All SQL of experiments. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from servicekit.pagination import PageQuery, Where, fetch_page


async def insert(
    conn: asyncpg.Connection,
    *,
    id: str,
    tenant_id: str,
    program_id: str,
    name: str,
    kind: str,
    salt: str,
    variants: list[dict[str, Any]],
) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO experiments (id, tenant_id, program_id, name, kind, salt, variants)
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING *
        """,
        id,
        tenant_id,
        program_id,
        name,
        kind,
        salt,
        json.dumps(variants),
    )
    assert row is not None
    return row


_GET = "SELECT * FROM experiments WHERE id = $1 AND tenant_id = $2 AND program_id = $3"
_GET_FOR_UPDATE = _GET + " FOR UPDATE"


async def get(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, experiment_id: str, *, lock: bool
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        _GET_FOR_UPDATE if lock else _GET,
        experiment_id,
        tenant_id,
        program_id,
    )
    return row


async def experiment_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id).add("program_id = {}", program_id)
    return await fetch_page(conn, "SELECT * FROM experiments", where, page)


async def set_status(
    conn: asyncpg.Connection, experiment_id: str, status: str, winner: str | None
) -> asyncpg.Record | None:
    """None when another experiment of the program is live already (the unique index)."""
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction goes on
            row: asyncpg.Record | None = await conn.fetchrow(
                """
                UPDATE experiments SET status = $2, winner = coalesce($3, winner),
                    started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now())
                                      ELSE started_at END,
                    ended_at = CASE WHEN $2 = 'ended' THEN now() ELSE ended_at END,
                    updated_at = now()
                WHERE id = $1 RETURNING *
                """,
                experiment_id,
                status,
                winner,
            )
    except asyncpg.UniqueViolationError:
        return None
    return row


async def advocates(conn: asyncpg.Connection, program_id: str) -> list[asyncpg.Record]:
    """The program's advocates (analytics' read model) and whether they referred someone."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT advocate_id, first_referral_at IS NOT NULL AS referred
        FROM analytics_advocates WHERE program_id = $1 AND enrolled_at IS NOT NULL
        """,
        program_id,
    )
    return rows


async def advocate_sums(conn: asyncpg.Connection, program_id: str) -> list[asyncpg.Record]:
    """Each of the program's advocates' figures (analytics' read model), all time."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT advocate_id, metric, unit, sum(value)::bigint AS value
        FROM analytics_advocate_counters WHERE program_id = $1
        GROUP BY advocate_id, metric, unit
        """,
        program_id,
    )
    return rows

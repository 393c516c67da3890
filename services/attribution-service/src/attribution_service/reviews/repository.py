"""The review queue's SQL. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def insert_review(
    conn: asyncpg.Connection,
    *,
    id: str,
    tenant_id: str,
    conversion_id: str,
    program_id: str,
    advocate_id: str,
    reasons: list[str],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO reviews (id, tenant_id, conversion_id, program_id, advocate_id, reasons)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (conversion_id) DO UPDATE SET reasons = EXCLUDED.reasons
        RETURNING *
        """,
        id,
        tenant_id,
        conversion_id,
        program_id,
        advocate_id,
        reasons,
    )
    assert row is not None
    return row


async def insert_reviews(conn: asyncpg.Connection, items: list[dict[str, Any]]) -> None:
    """insert_review for many new conversions (ids chosen by the caller)."""
    await conn.execute(
        """
        INSERT INTO reviews (id, tenant_id, conversion_id, program_id, advocate_id, reasons)
        SELECT u.id, u.t, u.c, u.p, u.a,
               ARRAY(SELECT jsonb_array_elements_text(u.r::jsonb))
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
            AS u(id, t, c, p, a, r)
        ON CONFLICT (conversion_id) DO UPDATE SET reasons = EXCLUDED.reasons
        """,
        [i["id"] for i in items],
        [i["tenant_id"] for i in items],
        [i["conversion_id"] for i in items],
        [i["program_id"] for i in items],
        [i["advocate_id"] for i in items],
        [json.dumps(i["reasons"]) for i in items],
    )


async def list_reviews(
    conn: asyncpg.Connection, tenant_id: str, status: str, limit: int, after: str | None
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM reviews WHERE tenant_id = $1 AND status = $2
          AND ($4::text IS NULL OR id > $4)
        ORDER BY id LIMIT $3
        """,
        tenant_id,
        status,
        limit,
        after,
    )
    return rows


async def get_review(
    conn: asyncpg.Connection, tenant_id: str, review_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = (
        "SELECT * FROM reviews WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
        if lock
        else "SELECT * FROM reviews WHERE id = $1 AND tenant_id = $2"
    )
    return await conn.fetchrow(sql, review_id, tenant_id)


async def close_review(
    conn: asyncpg.Connection, review_id: str, status: str, reason: str, decided_by: str | None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE reviews SET status = $2, decision_reason = $3, decided_by = $4, decided_at = now()
        WHERE id = $1 RETURNING *
        """,
        review_id,
        status,
        reason,
        decided_by,
    )
    assert row is not None
    return row

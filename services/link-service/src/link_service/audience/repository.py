"""SQL of programs' audiences and the attributes segment previews read. Functions take the
caller's connection: the edge owns the transaction; nothing here commits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


async def get_audience(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT program_id, attributes::text AS attributes, segments::text AS segments,
               eligibility::text AS eligibility, version, updated_at
        FROM program_audiences WHERE tenant_id = $1 AND program_id = $2
        """,
        tenant_id,
        program_id,
    )


async def put_audience(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, doc: dict[str, Any]
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO program_audiences (program_id, tenant_id, attributes, segments, eligibility)
        VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::jsonb)
        ON CONFLICT (program_id) DO UPDATE
            SET attributes = excluded.attributes, segments = excluded.segments,
                eligibility = excluded.eligibility,
                version = program_audiences.version + 1, updated_at = now()
        RETURNING program_id, attributes::text AS attributes, segments::text AS segments,
                  eligibility::text AS eligibility, version, updated_at
        """,
        program_id,
        tenant_id,
        json.dumps(doc["attributes"]),
        json.dumps(doc["segments"]),
        json.dumps(doc["eligibility"]),
    )
    assert row is not None
    return row


async def program_attributes(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, batch: int = 5_000
) -> AsyncIterator[dict[str, Any]]:
    """Every advocate's current attributes in the program, read in batches."""
    after = ""
    while True:
        rows = await conn.fetch(
            """
            SELECT id, attributes::text AS attributes FROM advocates
            WHERE tenant_id = $1 AND program_id = $2 AND id > $3
            ORDER BY id LIMIT $4
            """,
            tenant_id,
            program_id,
            after,
            batch,
        )
        for r in rows:
            yield json.loads(r["attributes"])
        if len(rows) < batch:
            return
        after = rows[-1]["id"]

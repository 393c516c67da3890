"""SQL of personal data requests: the requests, the parts services send back, and the
advocates a subject names."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from link_service.privacy.domain import Part


async def advocates_of(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str | None, email: str | None
) -> list[asyncpg.Record]:
    """Every advocate (every program) with this customer id or address."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, customer_id, email FROM advocates
        WHERE tenant_id = $1 AND (customer_id = $2 OR lower(email) = lower($3))
        ORDER BY id
        """,
        tenant_id,
        customer_id,
        email,
    )
    return rows


async def insert_request(
    conn: asyncpg.Connection,
    *,
    request_id: str,
    tenant_id: str,
    kind: str,
    subject: list[str],
    requested_by: str,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """
        INSERT INTO privacy_requests (id, tenant_id, kind, subject, requested_by)
        VALUES ($1, $2, $3, $4, $5) RETURNING *
        """,
        request_id,
        tenant_id,
        kind,
        subject,
        requested_by,
    )
    return row


async def get_request(
    conn: asyncpg.Connection, tenant_id: str, request_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT * FROM privacy_requests WHERE id = $1 AND tenant_id = $2"
    return await conn.fetchrow(sql + " FOR UPDATE" if lock else sql, request_id, tenant_id)


async def insert_part(conn: asyncpg.Connection, request_id: str, part: Part) -> None:
    """A redelivered part changes nothing."""
    await conn.execute(
        """
        INSERT INTO privacy_request_parts (request_id, service, part, parts, chunk, row_counts,
                                           done_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
        """,
        request_id,
        part.service,
        part.part,
        part.parts,
        part.chunk,
        part.row_counts,
        part.done_at,
    )


async def parts_of(conn: asyncpg.Connection, request_id: str, *, chunks: bool) -> list[Part]:
    rows = await conn.fetch(
        f"""
        SELECT service, part, parts, {"chunk" if chunks else "''::text AS chunk"}, row_counts,
               done_at
        FROM privacy_request_parts WHERE request_id = $1 ORDER BY service, part
        """,  # noqa: S608
        request_id,
    )
    return [
        Part(
            r["service"],
            r["part"],
            r["parts"],
            r["chunk"],
            _counts(r["row_counts"]),
            r["done_at"],
        )
        for r in rows
    ]


def _counts(raw: Any) -> dict[str, int]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): int(v) for k, v in (value or {}).items()}


async def mark_completed(conn: asyncpg.Connection, request_id: str) -> bool:
    status: str = await conn.execute(
        "UPDATE privacy_requests SET completed_at = now() WHERE id = $1 AND completed_at IS NULL",
        request_id,
    )
    return status.endswith(" 1")

"""SQL of advocate sightings. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def insert_sighting(
    conn: asyncpg.Connection,
    *,
    sighting_id: str,
    tenant_id: str,
    advocate_id: str,
    source: str,
    ip_hash: str | None,
    device_hash: str | None,
    seen_at: datetime,
) -> bool:
    """Whether the sighting is new (not the same advocate, network and device the same day)."""
    got = await conn.fetchval(
        """
        INSERT INTO advocate_sightings (id, tenant_id, advocate_id, day, ip_hash, device_hash,
                                        source, seen_at)
        VALUES ($1, $2, $3, ($7::timestamptz AT TIME ZONE 'UTC')::date, coalesce($4, ''),
                coalesce($5, ''), $6, $7)
        ON CONFLICT (advocate_id, day, ip_hash, device_hash) DO NOTHING
        RETURNING id
        """,
        sighting_id,
        tenant_id,
        advocate_id,
        ip_hash,
        device_hash,
        source,
        seen_at,
    )
    return got is not None

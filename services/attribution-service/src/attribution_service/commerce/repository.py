"""Commerce integrations' and webhook receipts' SQL. Functions take the caller's connection;
nothing commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from servicekit.pagination import PageQuery, Where, fetch_page


async def upsert_integration(
    conn: asyncpg.Connection,
    *,
    id: str,
    tenant_id: str,
    provider: str,
    account: str,
    secret: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO integrations (id, tenant_id, provider, account, secret)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tenant_id, provider, account)
        DO UPDATE SET secret = EXCLUDED.secret, updated_at = now()
        RETURNING *
        """,
        id,
        tenant_id,
        provider,
        account,
        secret,
    )
    assert row is not None
    return row


async def integration_page(
    conn: asyncpg.Connection, tenant_id: str, provider: str | None, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id).maybe("provider = {}", provider)
    return await fetch_page(conn, "SELECT * FROM integrations", where, page)


async def get_integration(conn: asyncpg.Connection, integration_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM integrations WHERE id = $1", integration_id)


async def delete_integration(conn: asyncpg.Connection, tenant_id: str, integration_id: str) -> bool:
    done: str = await conn.execute(
        "DELETE FROM integrations WHERE id = $1 AND tenant_id = $2", integration_id, tenant_id
    )
    return done.endswith(" 1")


async def insert_receipt(
    conn: asyncpg.Connection, integration_id: str, delivery_id: str, topic: str
) -> bool:
    """False when this delivery id was already received (a replay)."""
    row = await conn.fetchrow(
        """
        INSERT INTO webhook_receipts (integration_id, delivery_id, topic, outcome)
        VALUES ($1, $2, $3, '{}'::jsonb) ON CONFLICT DO NOTHING RETURNING 1
        """,
        integration_id,
        delivery_id,
        topic,
    )
    return row is not None


async def receipt_outcome(
    conn: asyncpg.Connection, integration_id: str, delivery_id: str
) -> dict[str, Any]:
    outcome: dict[str, Any] = await conn.fetchval(
        "SELECT outcome FROM webhook_receipts WHERE integration_id = $1 AND delivery_id = $2",
        integration_id,
        delivery_id,
    )
    return outcome


async def set_receipt_outcome(
    conn: asyncpg.Connection, integration_id: str, delivery_id: str, outcome: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE webhook_receipts SET outcome = $3 WHERE integration_id = $1 AND delivery_id = $2",
        integration_id,
        delivery_id,
        outcome,
    )


async def prune_receipts(conn: asyncpg.Connection, older_than: datetime) -> int:
    done: str = await conn.execute(
        "DELETE FROM webhook_receipts WHERE received_at < $1", older_than
    )
    return int(done.split()[-1])

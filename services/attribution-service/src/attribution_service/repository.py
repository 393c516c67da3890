"""All of attribution-service's SQL. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def upsert_program(
    conn: asyncpg.Connection, program_id: str, tenant_id: str, status: str
) -> None:
    await conn.execute(
        """
        INSERT INTO programs (id, tenant_id, status) VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()
        """,
        program_id,
        tenant_id,
        status,
    )


async def upsert_advocate(
    conn: asyncpg.Connection, advocate_id: str, tenant_id: str, program_id: str, customer_id: str
) -> None:
    await conn.execute(
        """
        INSERT INTO advocates (id, tenant_id, program_id, customer_id) VALUES ($1, $2, $3, $4)
        ON CONFLICT (id) DO NOTHING
        """,
        advocate_id,
        tenant_id,
        program_id,
        customer_id,
    )


async def upsert_code(
    conn: asyncpg.Connection,
    code_key: str,
    code: str,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code_key) DO NOTHING
        """,
        code_key,
        code,
        tenant_id,
        program_id,
        advocate_id,
    )


async def insert_click(conn: asyncpg.Connection, **f: Any) -> None:
    await conn.execute(
        """
        INSERT INTO clicks (id, tenant_id, code, program_id, advocate_id, clicked_at, ip_hash,
                            is_bot, counts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING
        """,
        f["click_id"],
        f["tenant_id"],
        f["code"],
        f["program_id"],
        f["advocate_id"],
        f["clicked_at"],
        f["ip_hash"],
        f["is_bot"],
        f["counts"],
    )


async def get_program(conn: asyncpg.Connection, program_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM programs WHERE id = $1", program_id)


async def get_advocate(conn: asyncpg.Connection, advocate_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM advocates WHERE id = $1", advocate_id)


async def get_code(conn: asyncpg.Connection, code_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM codes WHERE code_key = $1", code_key)


async def get_click(conn: asyncpg.Connection, click_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM clicks WHERE id = $1", click_id)


async def latest_referral(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT * FROM referrals WHERE tenant_id = $1 AND friend_customer_id = $2
        ORDER BY created_at DESC LIMIT 1
        """,
        tenant_id,
        customer_id,
    )


async def insert_referral_or_get(
    conn: asyncpg.Connection,
    *,
    referral_id: str,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    friend_customer_id: str,
    evidence: str,
    click_id: str | None,
) -> tuple[asyncpg.Record, bool]:
    """The friend's referral in this program, created if new, locked either way so concurrent
    conversions of one friend are decided one after the other."""
    row = await conn.fetchrow(
        """
        INSERT INTO referrals (id, tenant_id, program_id, advocate_id, friend_customer_id,
                               evidence, click_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (tenant_id, program_id, friend_customer_id) DO NOTHING RETURNING *
        """,
        referral_id,
        tenant_id,
        program_id,
        advocate_id,
        friend_customer_id,
        evidence,
        click_id,
    )
    created = row is not None
    row = await conn.fetchrow(
        """
        SELECT * FROM referrals WHERE tenant_id = $1 AND program_id = $2
        AND friend_customer_id = $3 FOR UPDATE
        """,
        tenant_id,
        program_id,
        friend_customer_id,
    )
    assert row is not None
    return row, created


async def count_attributed_purchases(
    conn: asyncpg.Connection, referral_id: str, excluding: str
) -> int:
    count: int = await conn.fetchval(
        """
        SELECT count(*) FROM conversions
        WHERE referral_id = $1 AND type = 'purchase' AND status = 'attributed' AND id <> $2
        """,
        referral_id,
        excluding,
    )
    return count


async def insert_conversion(conn: asyncpg.Connection, **f: Any) -> asyncpg.Record | None:
    """None when the idempotency key or (type, order id) already names a conversion."""
    return await conn.fetchrow(
        """
        INSERT INTO conversions (id, tenant_id, type, customer_id, email, order_id, amount_minor,
                                 currency, occurred_at, click_id, code_key, idempotency_key,
                                 request_hash, status)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending')
        ON CONFLICT DO NOTHING RETURNING *
        """,
        f["id"],
        f["tenant_id"],
        f["type"],
        f["customer_id"],
        f["email"],
        f["order_id"],
        f["amount_minor"],
        f["currency"],
        f["occurred_at"],
        f["click_id"],
        f["code_key"],
        f["idempotency_key"],
        f["request_hash"],
    )


async def conversion_by_key(
    conn: asyncpg.Connection, tenant_id: str, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversions WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        key,
    )


async def conversion_by_order(
    conn: asyncpg.Connection, tenant_id: str, type_: str, order_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversions WHERE tenant_id = $1 AND type = $2 AND order_id = $3",
        tenant_id,
        type_,
        order_id,
    )


async def get_conversion(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversions WHERE id = $1 AND tenant_id = $2", conversion_id, tenant_id
    )


async def pending_waiting_for(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    click_id: str | None = None,
    code_key: str | None = None,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM conversions
        WHERE status = 'pending' AND tenant_id = $1
          AND (click_id = $2 OR code_key = $3)
        ORDER BY created_at FOR UPDATE SKIP LOCKED
        """,
        tenant_id,
        click_id,
        code_key,
    )
    return rows


async def pending_overdue(
    conn: asyncpg.Connection, older_than: datetime, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM conversions WHERE status = 'pending' AND created_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
        """,
        older_than,
        limit,
    )
    return rows


async def record_decision(
    conn: asyncpg.Connection,
    conversion_id: str,
    *,
    status: str,
    program_id: str | None,
    advocate_id: str | None,
    referral_id: str | None,
    evidence: str | None,
    is_first_purchase: bool,
    explanation: dict[str, Any],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE conversions SET status = $2, program_id = $3, advocate_id = $4, referral_id = $5,
               evidence = $6, is_first_purchase = $7, explanation = $8, decided_at = now()
        WHERE id = $1 RETURNING *
        """,
        conversion_id,
        status,
        program_id,
        advocate_id,
        referral_id,
        evidence,
        is_first_purchase,
        explanation,
    )
    assert row is not None
    return row

"""All of link-service's SQL. Functions take the caller's connection: the edge owns the
transaction; nothing here commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def insert_program(
    conn: asyncpg.Connection,
    *,
    program_id: str,
    tenant_id: str,
    name: str,
    status: str,
    landing_url: str,
    allowed_domains: list[str],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO programs (id, tenant_id, name, status, landing_url, allowed_domains)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
        """,
        program_id,
        tenant_id,
        name,
        status,
        landing_url,
        allowed_domains,
    )
    assert row is not None
    return row


async def get_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM programs WHERE id = $1 AND tenant_id = $2", program_id, tenant_id
    )


async def insert_advocate(
    conn: asyncpg.Connection,
    *,
    advocate_id: str,
    tenant_id: str,
    program_id: str,
    customer_id: str,
    email: str | None,
    name: str | None,
    locale: str | None,
    marketing_consent: bool,
) -> asyncpg.Record | None:
    """None when the customer is already enrolled in the program."""
    return await conn.fetchrow(
        """
        INSERT INTO advocates (id, tenant_id, program_id, customer_id, email, name, locale,
                               marketing_consent)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (program_id, customer_id) DO NOTHING RETURNING *
        """,
        advocate_id,
        tenant_id,
        program_id,
        customer_id,
        email,
        name,
        locale,
        marketing_consent,
    )


async def get_advocate_by_customer(
    conn: asyncpg.Connection, program_id: str, customer_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM advocates WHERE program_id = $1 AND customer_id = $2",
        program_id,
        customer_id,
    )


async def get_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM advocates WHERE id = $1 AND tenant_id = $2", advocate_id, tenant_id
    )


async def insert_code(
    conn: asyncpg.Connection,
    *,
    code: str,
    code_key: str,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    kind: str,
) -> bool:
    """False when the code is taken (the caller draws another)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id, kind)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code_key) DO NOTHING RETURNING true
        """,
        code_key,
        code,
        tenant_id,
        program_id,
        advocate_id,
        kind,
    )
    return bool(inserted)


async def primary_code(conn: asyncpg.Connection, advocate_id: str) -> str:
    code: str | None = await conn.fetchval(
        "SELECT code FROM codes WHERE advocate_id = $1 ORDER BY created_at DESC LIMIT 1",
        advocate_id,
    )
    assert code is not None
    return code


async def resolve_code(conn: asyncpg.Connection, code_key: str) -> asyncpg.Record | None:
    """Everything the redirect needs in one round trip."""
    return await conn.fetchrow(
        """
        SELECT c.code, c.tenant_id, c.program_id, c.advocate_id, p.status AS program_status,
               p.landing_url, a.blocked AS advocate_blocked
        FROM codes c
        JOIN programs p ON p.id = c.program_id
        JOIN advocates a ON a.id = c.advocate_id
        WHERE c.code_key = $1
        """,
        code_key,
    )


async def insert_click(
    conn: asyncpg.Connection,
    *,
    click_id: str,
    tenant_id: str,
    code: str,
    program_id: str,
    advocate_id: str,
    channel: str | None,
    clicked_at: datetime,
    user_agent_family: str | None,
    device_class: str | None,
    referrer_host: str | None,
    ip_hash: str | None,
    is_bot: bool,
    counts: bool,
) -> None:
    await conn.execute(
        """
        INSERT INTO clicks (id, tenant_id, code, program_id, advocate_id, channel, clicked_at,
                            user_agent_family, device_class, referrer_host, ip_hash, is_bot,
                            counts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        """,
        click_id,
        tenant_id,
        code,
        program_id,
        advocate_id,
        channel,
        clicked_at,
        user_agent_family,
        device_class,
        referrer_host,
        ip_hash,
        is_bot,
        counts,
    )

"""SQL of the programs and advocates copies. Functions take the caller's connection."""

from __future__ import annotations

import asyncpg


async def add_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    await conn.execute(
        "INSERT INTO programs (tenant_id, program_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        tenant_id,
        program_id,
    )


async def add_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, program_id: str
) -> None:
    await conn.execute(
        """
        INSERT INTO advocates (tenant_id, advocate_id, program_id) VALUES ($1, $2, $3)
        ON CONFLICT DO NOTHING
        """,
        tenant_id,
        advocate_id,
        program_id,
    )


async def program_known(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> bool:
    known: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM programs WHERE tenant_id = $1 AND program_id = $2)",
        tenant_id,
        program_id,
    )
    return known


async def holder_known(conn: asyncpg.Connection, tenant_id: str, holder_id: str) -> bool:
    """An advocate heard of, or anyone holding an account (a friend holds as a customer, whom
    link-service need not know)."""
    known: bool = await conn.fetchval(
        """
        SELECT EXISTS (SELECT FROM advocates WHERE tenant_id = $1 AND advocate_id = $2)
            OR EXISTS (SELECT FROM accounts WHERE tenant_id = $1 AND holder_id = $2)
        """,
        tenant_id,
        holder_id,
    )
    return known

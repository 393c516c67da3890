"""SQL of coupon pools and their codes. Functions take the caller's connection: the edge owns
the transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from reward_service.coupons import domain
from servicekit.pagination import PageQuery, Where, fetch_page
from servicekit.sql import record_as


async def coupon_pool_exists(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, pool_id: str
) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM coupon_pools WHERE id = $1 AND tenant_id = $2 AND program_id = $3",
            pool_id,
            tenant_id,
            program_id,
        )
    )


async def insert_coupon_pool(
    conn: asyncpg.Connection,
    pool_id: str,
    tenant_id: str,
    program_id: str,
    name: str,
    low_threshold: int,
) -> None:
    await conn.execute(
        "INSERT INTO coupon_pools (id, tenant_id, program_id, name, low_threshold)"
        " VALUES ($1, $2, $3, $4, $5)",
        pool_id,
        tenant_id,
        program_id,
        name,
        low_threshold,
    )


async def add_coupon_codes(conn: asyncpg.Connection, pool_id: str, codes: list[str]) -> int:
    """Adds codes not already in the pool; returns how many were new."""
    added: int = await conn.fetchval(
        """
        WITH added AS (
            INSERT INTO coupon_codes (pool_id, code)
            SELECT $1, c FROM unnest($2::text[]) AS c
            ON CONFLICT DO NOTHING RETURNING 1
        )
        SELECT count(*) FROM added
        """,
        pool_id,
        codes,
    )
    return added


async def coupon_pool(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str, added: int | None = None
) -> domain.CouponPool | None:
    """The pool with its counts of codes; `added` is passed through to the answer."""
    row = await conn.fetchrow(
        """
        SELECT p.id, p.program_id, p.name, p.low_threshold, p.created_at,
               count(c.code) AS total, count(c.code) FILTER (WHERE c.reward_id IS NULL) AS remaining
        FROM coupon_pools p LEFT JOIN coupon_codes c ON c.pool_id = p.id
        WHERE p.id = $1 AND p.tenant_id = $2
        GROUP BY p.id
        """,
        pool_id,
        tenant_id,
    )
    return None if row is None else record_as(domain.CouponPool, row, added=added)


async def coupon_pool_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[domain.CouponPool]:
    """One page of the program's pools, each with its counts of codes."""
    where = Where().add("p.tenant_id = {}", tenant_id).add("p.program_id = {}", program_id)
    select = """
        SELECT p.id, p.program_id, p.name, p.low_threshold, p.created_at, n.total, n.remaining
        FROM coupon_pools p, LATERAL (
            SELECT count(c.code) AS total,
                   count(c.code) FILTER (WHERE c.reward_id IS NULL) AS remaining
            FROM coupon_codes c WHERE c.pool_id = p.id
        ) n
    """
    rows = await fetch_page(conn, select, where, page, alias="p")
    return [record_as(domain.CouponPool, r) for r in rows]


async def pick_coupon(conn: asyncpg.Connection, pool_id: str) -> str | None:
    """A free code of the pool, its row locked until the transaction ends.

    Allocations from one pool take turns on the pool's row, so the count of codes left (and the
    low-pool event it drives) is exact; SKIP LOCKED on the code rows keeps a code locked by any
    other writer from being handed out twice, and the unique reward_id makes a second code for
    the same reward impossible."""
    await conn.execute("SELECT 1 FROM coupon_pools WHERE id = $1 FOR UPDATE", pool_id)
    code: str | None = await conn.fetchval(
        """
        SELECT code FROM coupon_codes
        WHERE pool_id = $1 AND reward_id IS NULL
        ORDER BY created_at, code LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        pool_id,
    )
    return code


async def assign_coupon(
    conn: asyncpg.Connection, pool_id: str, code: str, reward_id: str, holder_id: str, at: datetime
) -> domain.Stock:
    """Hands the picked code to the reward (reward_id is unique: one code per reward) and
    returns the codes still free against the pool's low threshold."""
    await conn.execute(
        """
        UPDATE coupon_codes SET reward_id = $3, holder_id = $4, allocated_at = $5
        WHERE pool_id = $1 AND code = $2 AND reward_id IS NULL
        """,
        pool_id,
        code,
        reward_id,
        holder_id,
        at,
    )
    row = await conn.fetchrow(
        """
        SELECT p.low_threshold AS threshold,
               (SELECT count(*) FROM coupon_codes WHERE pool_id = $1 AND reward_id IS NULL)
                   AS remaining
        FROM coupon_pools p WHERE p.id = $1
        """,
        pool_id,
    )
    assert row is not None
    return record_as(domain.Stock, row)

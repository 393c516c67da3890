"""Coupon-pool use cases. They take the edge's connection and never commit. (Codes are handed
out by earning, which allocates them through coupons/repository.py.)"""

from __future__ import annotations

import asyncpg

from reward_service.coupons import domain, repository
from reward_service.programs import handlers as programs
from servicekit.ids import new_id
from servicekit.pagination import PageQuery
from servicekit.problems import NotFound


async def get_coupon_pool(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str, added: int | None = None
) -> domain.CouponPool:
    pool = await repository.coupon_pool(conn, tenant_id, pool_id, added)
    if pool is None:
        raise NotFound(f"coupon pool '{pool_id}' does not exist", field="/pool_id")
    return pool


async def coupon_pool_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[domain.CouponPool]:
    await programs.require_program(conn, tenant_id, program_id)
    return await repository.coupon_pool_page(conn, tenant_id, program_id, page)


async def create_coupon_pool(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    name: str,
    low_threshold: int,
    codes: list[str],
) -> domain.CouponPool:
    pool_id = new_id("cpl")
    await repository.insert_coupon_pool(conn, pool_id, tenant_id, program_id, name, low_threshold)
    added = await repository.add_coupon_codes(conn, pool_id, codes)
    return await get_coupon_pool(conn, tenant_id, pool_id, added)


async def add_coupon_codes(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str, codes: list[str]
) -> domain.CouponPool:
    """Adds codes; codes already in the pool are skipped (`added` counts the new ones)."""
    await get_coupon_pool(conn, tenant_id, pool_id)
    added = await repository.add_coupon_codes(conn, pool_id, codes)
    return await get_coupon_pool(conn, tenant_id, pool_id, added)

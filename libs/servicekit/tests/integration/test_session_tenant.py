"""The tenant a pooled connection acts for (`app.tenant_id`) is the acquiring task's, whatever the
connection acted for before: the per-connection cache that spares the set_config round trip
(servicekit.db) must never leave a session on an earlier tenant, with or without the pool's
session reset, and across a rolled-back transaction."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from devstack.pytest_plugin import Namespace
from servicekit import db

pytestmark = pytest.mark.integration


async def _seen(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        value: str = await conn.fetchval("SELECT current_setting('app.tenant_id', true)")
        return value


@pytest.mark.parametrize("reset_session", [True, False])
async def test_each_acquire_acts_for_the_acquiring_tasks_tenant(
    namespace: Namespace, reset_session: bool
) -> None:
    pool = await db.create_pool(
        namespace.database_url,
        schema="public",
        application_name="tenant-cache-test",
        min_size=1,
        max_size=1,  # one connection: every acquire reuses the session before it
        reset_session=reset_session,
    )
    try:

        async def as_tenant(tenant: str | None) -> str:
            if tenant is None:
                db.act_for_all_tenants()
            else:
                db.act_for(tenant)
            return await _seen(pool)

        # Each in a task of its own: a task's context starts as its creator's.
        order = ["ten_a", "ten_a", "ten_b", None, "ten_a", None, None, "ten_b"]
        for tenant in order:
            got = await asyncio.create_task(as_tenant(tenant))
            assert got == (tenant or db.ALL_TENANTS)

        async def rolled_back_then_read() -> str:
            db.act_for("ten_c")
            with pytest.raises(RuntimeError):
                async with db.transaction(pool) as conn:
                    await conn.execute("SELECT 1")
                    raise RuntimeError("rolled back")
            return await _seen(pool)

        assert await asyncio.create_task(rolled_back_then_read()) == "ten_c"

        async def nothing_set() -> str:
            return await _seen(pool)

        # A task that never chose acts for no tenant (the policies match no row).
        db._TENANT.set(db.NO_TENANT)
        assert await asyncio.create_task(nothing_set()) == db.NO_TENANT
    finally:
        await pool.close()

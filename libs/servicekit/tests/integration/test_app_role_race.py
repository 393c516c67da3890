"""The services' migrations may run at once on a fresh database (four `migrate` jobs, or the
devstack starting them in parallel): each makes the application role if it is missing, and the
role belongs to the cluster, not to a schema. Two migrations that both found it missing used to
fail the second (`pg_authid_rolname_index`) once the first committed."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from devstack.pytest_plugin import Namespace
from servicekit.rls import ensure_role

pytestmark = pytest.mark.integration


async def test_two_migrations_making_the_role_at_once_both_succeed(namespace: Namespace) -> None:
    role = f"race_{secrets.token_hex(4)}"
    make = f"DO $r$ BEGIN {ensure_role(role)} END $r$"
    first = await asyncpg.connect(namespace.database_url)
    second = await asyncpg.connect(namespace.database_url)
    try:
        async with first.transaction():
            await first.execute(make)  # made, not committed: the second cannot see it yet
            racing = second.transaction()
            await racing.start()
            behind = asyncio.create_task(second.execute(make))
            await asyncio.sleep(0.5)
            assert not behind.done()  # waits on the first's uncommitted catalogue row
        await asyncio.wait_for(behind, 10)  # the first committed: the second goes on
        await racing.commit()
        assert await second.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role)
    finally:
        await second.execute(f"DROP ROLE IF EXISTS {role}")
        await first.close()
        await second.close()

"""Row-level security, the second wall behind every query's own tenant scoping
(servicekit.rls): every tenant table of the four schemas has it FORCEd, the services act as a
role that cannot bypass it, and at the database itself a connection without a tenant sees no
row and one tenant's connection sees none of another's, even with a bare `SELECT *`."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key, serve_in_process
from link_service.config import Settings
from link_service.main import create_app
from servicekit import db
from servicekit.rls import APP_ROLE

pytestmark = [pytest.mark.integration]

SCHEMAS = {
    "link": "link_service",
    "attribution": "attribution_service",
    "reward": "reward_service",
    "notification": "notification_service",
}


@pytest.fixture
async def migrated(namespace: Namespace) -> AsyncIterator[Namespace]:
    for schema, package in SCHEMAS.items():
        await migrate(namespace.database_url, schema, package)
    yield namespace


async def _tenant_tables(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT n.nspname AS schema, c.relname AS table, c.relrowsecurity AS enabled,
               c.relforcerowsecurity AS forced,
               EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid) AS has_policy
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                           AND NOT a.attisdropped
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
        ORDER BY 1, 2
        """,
        list(SCHEMAS),
    )


async def _as_app(ns: Namespace, tenant: str | None) -> asyncpg.Connection:
    settings = {"role": APP_ROLE, **({"app.tenant_id": tenant} if tenant is not None else {})}
    return await asyncpg.connect(ns.database_url, server_settings=settings)


async def test_every_tenant_table_forces_row_level_security(migrated: Namespace) -> None:
    conn = await asyncpg.connect(migrated.database_url)
    try:
        tables = await _tenant_tables(conn)
        assert len(tables) > 20, tables
        unguarded = [
            f"{t['schema']}.{t['table']}"
            for t in tables
            if not (t["enabled"] and t["forced"] and t["has_policy"])
        ]
        assert not unguarded, unguarded
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", APP_ROLE
        )
        assert role is not None and not role["rolsuper"] and not role["rolbypassrls"]
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
            " WHERE r.rolname = $1",
            APP_ROLE,
        )
        assert owned == 0
    finally:
        await conn.close()


async def test_no_tenant_sees_nothing_and_a_tenant_sees_only_its_own(migrated: Namespace) -> None:
    ns = migrated
    acme, acme_entry = new_api_key("acme")
    _globex, globex_entry = new_api_key("globex")
    settings = Settings(**ns.settings_env(), api_keys=[acme_entry, globex_entry])
    # the service itself acts as the role (DATABASE_ROLE's default) and works through the wall
    async with serve_in_process(create_app(settings), acme) as client:
        r = await client.post(
            "/v1/programs", json={"name": "p", "landing_url": "https://s.example"}
        )
        assert r.status_code == 201, r.text
        r = await client.post(f"/v1/programs/{r.json()['id']}/advocates", json={"customer_id": "c"})
        assert r.status_code == 201, r.text

    owner = await asyncpg.connect(ns.database_url)
    nobody = await _as_app(ns, None)
    globex = await _as_app(ns, "globex")
    mine = await _as_app(ns, "acme")
    try:
        tables = await _tenant_tables(owner)
        for t in tables:
            name = f'"{t["schema"]}"."{t["table"]}"'
            assert await nobody.fetch(f"SELECT * FROM {name}") == [], name  # noqa: S608
            assert await globex.fetch(f"SELECT * FROM {name}") == [], name  # noqa: S608
        assert await owner.fetchval("SELECT count(*) FROM link.programs") == 1
        assert await mine.fetchval("SELECT count(*) FROM link.programs") == 1
        assert await mine.fetchval("SELECT count(*) FROM link.advocates") == 1
        # a write for another tenant is refused, and the role cannot lift the wall
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await mine.execute("UPDATE link.programs SET tenant_id = 'globex'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await mine.execute("ALTER TABLE link.programs NO FORCE ROW LEVEL SECURITY")
        await nobody.execute("SET row_security = off")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await nobody.fetch("SELECT * FROM link.programs")
    finally:
        for c in (owner, nobody, globex, mine):
            await c.close()


async def test_the_running_services_act_as_a_role_that_cannot_bypass_it(
    migrated: Namespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each of the four services, configured from the environment its processes get (devstack's,
    which names no role, so the default holds as in compose and k8s), acts as `referral_app`
    on its pool: not the login role (a superuser here, whom the policies do not hold)."""
    _key, entry = new_api_key("acme")
    cfg = migrated.stack_config([entry], tmp_path)
    for svc in services.SERVICES:
        env = cfg.env(svc)
        assert "DATABASE_ROLE" not in env
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            module = importlib.import_module(f"{svc.package}.main")
            config = importlib.import_module(f"{svc.package}.config")
            app = module.create_app(config.Settings())
        async with serve_in_process(app), app.state.runtime.pool.acquire() as conn:
            who = await conn.fetchrow(
                "SELECT current_user AS name, rolsuper, rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user"
            )
        assert dict(who) == {"name": APP_ROLE, "rolsuper": False, "rolbypassrls": False}, svc.name


@pytest.mark.parametrize("reset_session", [True, False], ids=["reset", "kept"])
async def test_each_acquire_carries_the_task_s_tenant(
    migrated: Namespace, reset_session: bool
) -> None:
    """One connection handed out again and again follows whichever tenant the acquiring task
    acts for, also where the pool keeps sessions between acquires."""
    pool = await db.create_pool(
        migrated.database_url,
        schema="link",
        application_name="rls-test",
        min_size=1,
        max_size=1,
        reset_session=reset_session,
        server_settings={"role": APP_ROLE},
    )

    async def carried() -> str:
        async with pool.acquire() as conn:
            return str(await conn.fetchval("SELECT current_setting('app.tenant_id')"))

    async def as_task(tenant: str | None) -> str:
        if tenant == db.ALL_TENANTS:
            db.act_for_all_tenants()
        elif tenant is not None:
            db.act_for(tenant)
        return await carried()

    try:
        seen = [
            await asyncio.create_task(as_task(t))
            for t in ["acme", "acme", "globex", None, db.ALL_TENANTS, "acme"]
        ]
        assert seen == ["acme", "acme", "globex", "", "*", "acme"]
        with db.all_tenants():
            assert await carried() == "*"
    finally:
        await pool.close()

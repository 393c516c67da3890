"""The service's asyncpg pool. Every connection is pinned to the service's own schema and names
itself (application_name) so pg_stat_activity shows who holds what.

Row-level security is the second wall behind every query's own `tenant_id` scoping: each tenant
table lets a connection see only the rows of `app.tenant_id` ("*": every tenant;
`servicekit.sql.ROW_LEVEL_SECURITY`). The tenant a task acts for is a context variable set where
it is known: the API key's tenant when a request authenticates (servicekit.auth), every tenant
for a route that takes no key (`public(...)`: it finds its tenant from what it is given, a code,
a token, a signed delivery) and for the runtime's consumers, relay and workers (they act for
the tenants their rows and events name). Every connection a pool hands out carries it
(`app.tenant_id`, set in the acquire's setup); nothing set: no rows at all."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

import asyncpg

# Where the database errors are written once (re-exported: the services import it from here).
from referral_events.database_errors import DB_ERRORS as DB_ERRORS

# `app.tenant_id` for every tenant: the value of the runtime's background work and of public routes.
ALL_TENANTS = "*"
# No tenant: the policies match no row.
NO_TENANT = ""
_TENANT: ContextVar[str] = ContextVar("servicekit_tenant", default=NO_TENANT)


def act_for(tenant_id: str) -> None:
    """This task's connections see `tenant_id`'s rows only (from the next acquire on)."""
    if tenant_id in (ALL_TENANTS, NO_TENANT):
        raise ValueError(f"not a tenant id: {tenant_id!r}")
    _TENANT.set(tenant_id)


def act_for_all_tenants() -> None:
    """This task (and the tasks it starts) acts across tenants: the documented path for work
    that legitimately does (consumers, the relay, workers, public routes, commands)."""
    _TENANT.set(ALL_TENANTS)


@contextmanager
def all_tenants() -> Iterator[None]:
    """Across tenants for the block only (a key lookup before the tenant is known)."""
    token = _TENANT.set(ALL_TENANTS)
    try:
        yield
    finally:
        _TENANT.reset(token)


def current_tenant() -> str:
    return _TENANT.get()


# The `app.tenant_id` each pooled connection's session holds, as last set by the acquire's
# setup: an acquire acting for the tenant the session already holds sends nothing (the
# connections of a writer or consumer loop act for the same tenant acquire after acquire; a
# round trip per acquire was a tenth of a conversion's). Forgotten when a release resets the
# session (RESET ALL) and with the connection itself.
_SESSION_TENANT: weakref.WeakKeyDictionary[asyncpg.Connection, str] = weakref.WeakKeyDictionary()


def _raw(conn: asyncpg.Connection) -> asyncpg.Connection:
    # A pool's setup gets the acquire's proxy, its reset the connection itself: the cache is
    # keyed by the connection, which outlives its proxies.
    raw: asyncpg.Connection = getattr(conn, "_con", None) or conn
    return raw


async def _act_for_current_tenant(conn: asyncpg.Connection) -> None:
    # Session-level and outside any transaction (so a rollback cannot undo it, and a
    # transaction's own statements stay as they were); remembered only once Postgres took it.
    tenant, raw = _TENANT.get(), _raw(conn)
    if _SESSION_TENANT.get(raw) == tenant:
        return
    _SESSION_TENANT.pop(raw, None)
    await conn.execute(_SET_TENANT, tenant)
    _SESSION_TENANT[raw] = tenant


async def _reset_session(conn: asyncpg.Connection) -> None:
    """asyncpg's own session reset (RESET ALL among others), which clears `app.tenant_id`."""
    _SESSION_TENANT.pop(_raw(conn), None)
    await conn.reset()


_SET_TENANT = "SELECT set_config('app.tenant_id', $1, false)"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A release without asyncpg's session reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL
    in one more round trip). asyncpg still rolls back an open transaction and drops listeners."""


async def create_pool(
    dsn: str,
    *,
    schema: str,
    application_name: str,
    min_size: int,
    max_size: int,
    reset_session: bool = True,
    server_settings: Mapping[str, str] | None = None,
    across_tenants: bool = False,
) -> asyncpg.Pool:
    """`reset_session=False` only for a service whose pooled connections never take session
    advisory locks, open cursors, LISTEN or SET (transactions only). `server_settings`: more
    session settings for every pooled connection (search_path and application_name are
    set here). `across_tenants`: every connection acts for every tenant from its start, as a
    command's `one_connection` does, with no statement per acquire and no session reset (it
    must never be SET): for a public read path that finds its tenant in what it is given
    (link-service's GET /v1/me, one round trip a page instead of three)."""
    settings = {
        **(server_settings or {}),
        "search_path": schema,
        "application_name": application_name,
    }
    if across_tenants:
        settings["app.tenant_id"] = ALL_TENANTS
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        setup=None if across_tenants else _act_for_current_tenant,
        reset=_keep_session if across_tenants or not reset_session else _reset_session,
        server_settings=settings,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The unit of work: commits when the block ends normally, rolls back on any exception."""
    async with pool.acquire() as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def one_connection(
    dsn: str,
    *,
    schema: str,
    application_name: str,
    server_settings: Mapping[str, str] | None = None,
) -> AsyncIterator[asyncpg.Connection]:
    """One connection made as the pool's are (schema, name, codecs), for a command's work
    (`<service> verify`, `outbox-release`), across tenants; no statement timeout: a command may
    scan it all."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn,
        server_settings={
            **(server_settings or {}),
            "search_path": schema,
            "application_name": application_name,
            "app.tenant_id": ALL_TENANTS,
        },
    )
    try:
        await _init_connection(conn)
        yield conn
    finally:
        await conn.close()

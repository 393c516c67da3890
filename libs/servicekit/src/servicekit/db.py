"""The service's asyncpg pool. Every connection is pinned to the service's own schema and names
itself (application_name) so pg_stat_activity shows who holds what."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import asyncpg


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
) -> asyncpg.Pool:
    """`reset_session=False` only for a service whose pooled connections never take session
    advisory locks, open cursors, LISTEN or SET (transactions only). `server_settings`: more
    session settings for every pooled connection (search_path and application_name are
    set here)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=None if reset_session else _keep_session,
        server_settings={
            **(server_settings or {}),
            "search_path": schema,
            "application_name": application_name,
        },
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
    dsn: str, *, schema: str, application_name: str
) -> AsyncIterator[asyncpg.Connection]:
    """One connection made as the pool's are (schema, name, codecs), for a command's work
    (`<service> verify`, `outbox-release`); no statement timeout: a command may scan it all."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": application_name}
    )
    try:
        await _init_connection(conn)
        yield conn
    finally:
        await conn.close()

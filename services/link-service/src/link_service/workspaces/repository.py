"""SQL of workspaces, keys and the audit log. Functions take the caller's connection: the edge
owns the transaction; nothing here commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from servicekit.pagination import Keyset, PageQuery, Where, fetch_page


async def insert_workspace(
    conn: asyncpg.Connection, workspace_id: str, name: str, plan: str, created_by: str
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO workspaces (id, name, plan, created_by) VALUES ($1, $2, $3, $4) RETURNING *",
        workspace_id,
        name,
        plan,
        created_by,
    )
    return row


async def workspace_page(conn: asyncpg.Connection, page: PageQuery) -> list[asyncpg.Record]:
    return await fetch_page(conn, "SELECT * FROM workspaces", Where(), page)


async def workspace_plan(conn: asyncpg.Connection, workspace_id: str) -> str | None:
    plan: str | None = await conn.fetchval(
        "SELECT plan FROM workspaces WHERE id = $1", workspace_id
    )
    return plan


async def insert_key(
    conn: asyncpg.Connection,
    *,
    key_id: str,
    key_hash: str,
    workspace_id: str,
    name: str,
    prefix: str,
    scopes: list[str],
    plan: str,
    expires_at: datetime | None,
    created_by: str,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """
        INSERT INTO api_keys (key_hash, id, workspace_id, name, prefix, scopes, plan, expires_at,
                              created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING *
        """,
        key_hash,
        key_id,
        workspace_id,
        name,
        prefix,
        scopes,
        plan,
        expires_at,
        created_by,
    )
    return row


async def get_key(
    conn: asyncpg.Connection, workspace_id: str, key_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM api_keys WHERE workspace_id = $1 AND id = $2{lock}",  # noqa: S608
        workspace_id,
        key_id,
    )
    return row


async def list_keys(conn: asyncpg.Connection, workspace_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id", workspace_id
    )
    return rows


async def key_page(
    conn: asyncpg.Connection, workspace_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("workspace_id = {}", workspace_id)
    return await fetch_page(conn, "SELECT * FROM api_keys", where, page)


async def update_key(
    conn: asyncpg.Connection,
    key_id: str,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """
        UPDATE api_keys SET name = $2, scopes = $3, expires_at = $4, version = version + 1,
                            updated_at = now()
         WHERE id = $1 RETURNING *
        """,
        key_id,
        name,
        scopes,
        expires_at,
    )
    return row


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """
        UPDATE api_keys SET revoked_at = now(), version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING *
        """,
        key_id,
    )
    return row


async def record_use(
    conn: asyncpg.Connection, used: dict[str, datetime], *, workspace_id: str | None = None
) -> None:
    """last_used_at of many keys at once, never moved backwards (`workspace_id`: only keys of
    that workspace, for uses another service reported)."""
    await conn.execute(
        """
        UPDATE api_keys k SET last_used_at = u.at
          FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
           AND ($3::text IS NULL OR k.workspace_id = $3)
        """,
        list(used),
        list(used.values()),
        workspace_id,
    )


async def insert_audit(
    conn: asyncpg.Connection,
    *,
    workspace_id: str,
    actor_key_id: str,
    action: str,
    target_id: str | None,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        """
        INSERT INTO audit_log (workspace_id, actor_key_id, action, target_id, details)
        VALUES ($1, $2, $3, $4, $5)
        """,
        workspace_id,
        actor_key_id,
        action,
        target_id,
        details,
    )


# The audit log's order: its time, then its sequence number (index audit_log_by_time).
AUDIT_ORDER = Keyset(time="at", id="seq", numeric_id=True)


async def audit_page(
    conn: asyncpg.Connection, workspace_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("workspace_id = {}", workspace_id)
    return await fetch_page(conn, "SELECT * FROM audit_log", where, page, AUDIT_ORDER)

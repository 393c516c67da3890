"""SQL of programs. Functions take the caller's connection: the edge owns the transaction;
nothing here commits."""

from __future__ import annotations

from typing import Any

import asyncpg

from link_service.programs.domain import ProgramSettings
from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page

# The stored columns of a program's settings, in the order of _values.
PROGRAM_COLUMNS = (
    "name",
    "status",
    "landing_url",
    "allowed_domains",
    "starts_at",
    "ends_at",
    "fallback_url",
    "default_locale",
    "code_length",
    "code_alphabet",
    "code_prefix",
    "vanity_allowed",
    "share_templates",
)


def _values(p: ProgramSettings) -> tuple[Any, ...]:
    return (
        p.name,
        p.status,
        p.landing_url,
        p.allowed_domains,
        p.starts_at,
        p.ends_at,
        p.fallback_url,
        p.default_locale,
        p.code_format.length,
        p.code_format.alphabet,
        p.code_format.prefix,
        p.vanity_allowed,
        p.share_templates,
    )


async def insert_program(
    conn: asyncpg.Connection, *, program_id: str, tenant_id: str, program: ProgramSettings
) -> asyncpg.Record:
    cols = ", ".join(PROGRAM_COLUMNS)
    params = ", ".join(f"${i}" for i in range(3, len(PROGRAM_COLUMNS) + 3))
    row = await conn.fetchrow(
        f"INSERT INTO programs (id, tenant_id, {cols}) VALUES ($1, $2, {params}) RETURNING *",  # noqa: S608
        program_id,
        tenant_id,
        *_values(program),
    )
    assert row is not None
    return row


async def update_program(
    conn: asyncpg.Connection, *, program_id: str, tenant_id: str, program: ProgramSettings
) -> asyncpg.Record:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(PROGRAM_COLUMNS, start=3))
    row = await conn.fetchrow(
        f"""
        UPDATE programs SET {sets}, version = version + 1, updated_at = now()
        WHERE id = $1 AND tenant_id = $2 RETURNING *
        """,  # noqa: S608
        program_id,
        tenant_id,
        *_values(program),
    )
    assert row is not None
    return row


async def get_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT * FROM programs WHERE id = $1 AND tenant_id = $2{lock}",  # noqa: S608
        program_id,
        tenant_id,
    )


async def program_page(
    conn: asyncpg.Connection, tenant_id: str, created: CreatedRange, page: PageQuery
) -> list[asyncpg.Record]:
    where = created.apply(Where().add("tenant_id = {}", tenant_id))
    return await fetch_page(conn, "SELECT * FROM programs", where, page)

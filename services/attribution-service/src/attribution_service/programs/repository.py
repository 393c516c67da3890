"""The copies of link-service's facts (programs, advocates, codes, clicks) and the programs'
attribution settings. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from referral_events.contracts import link as ev
from servicekit.sql import Params


async def upsert_program(
    conn: asyncpg.Connection, tenant_id: str, p: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    # `version` only grows: an older state arriving late (redelivery) changes nothing.
    await conn.execute(
        """
        INSERT INTO programs (id, tenant_id, status, name, starts_at, ends_at, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, name = EXCLUDED.name,
            starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
            version = EXCLUDED.version, updated_at = now()
        WHERE programs.version <= EXCLUDED.version
        """,
        p.program_id,
        tenant_id,
        p.status,
        p.name,
        p.starts_at,
        p.ends_at,
        p.version,
    )


async def set_friend_countries(
    conn: asyncpg.Connection, tenant_id: str, p: ev.ProgramAudienceChanged
) -> None:
    """The program's rule on friends' countries; an older audience arriving late changes
    nothing. The program's own copy comes first (same key on link.events)."""
    friends = p.eligibility.get("friends") or {}
    rule = {
        "countries_allow": list(friends.get("countries_allow", [])),
        "countries_deny": list(friends.get("countries_deny", [])),
    }
    await conn.execute(
        """
        UPDATE programs SET friend_countries = $3::text::jsonb, audience_version = $4
        WHERE id = $1 AND tenant_id = $2 AND audience_version < $4
        """,
        p.program_id,
        tenant_id,
        json.dumps(rule),
        p.version,
    )


async def upsert_advocate(
    conn: asyncpg.Connection,
    tenant_id: str,
    a: ev.AdvocateEnrolled | ev.AdvocateUpdated,
    *,
    email_norm: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO advocates (id, tenant_id, program_id, customer_id, email, email_norm,
                               blocked, version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
            email = EXCLUDED.email, email_norm = EXCLUDED.email_norm,
            blocked = EXCLUDED.blocked, version = EXCLUDED.version
        WHERE advocates.version <= EXCLUDED.version
        """,
        a.advocate_id,
        tenant_id,
        a.program_id,
        a.customer_id,
        a.email,
        email_norm,
        a.blocked,
        a.version,
    )


async def insert_sighting(conn: asyncpg.Connection, tenant_id: str, s: ev.AdvocateSighted) -> None:
    await conn.execute(
        """
        INSERT INTO advocate_sightings (id, tenant_id, advocate_id, seen_at, source, ip_hash,
                                        device_hash)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING
        """,
        s.sighting_id,
        tenant_id,
        s.advocate_id,
        s.seen_at,
        s.source,
        s.ip_hash,
        s.device_hash,
    )


async def set_advocate_blocked(
    conn: asyncpg.Connection, advocate_id: str, blocked: bool, version: int | None
) -> None:
    await conn.execute(
        """
        UPDATE advocates SET blocked = $2, version = coalesce($3, version)
        WHERE id = $1 AND ($3::bigint IS NULL OR version <= $3)
        """,
        advocate_id,
        blocked,
        version,
    )


async def upsert_code(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    code: str,
    program_id: str,
    advocate_id: str,
    alias_of: str | None,
) -> None:
    """The code under its key (upper case); a code already known stays as it is."""
    await conn.execute(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id, alias_of)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code_key) DO NOTHING
        """,
        code.upper(),
        code,
        tenant_id,
        program_id,
        advocate_id,
        alias_of,
    )


# A click's columns as link.clicked names them, after its id and tenant.
_CLICK = Params(
    (
        "code",
        "program_id",
        "advocate_id",
        "clicked_at",
        "ip_hash",
        "is_bot",
        "counts",
        "device_class",
        "inactive_reason",
    ),
    first=3,
    types={"clicked_at": "timestamptz", "is_bot": "boolean", "counts": "boolean"},
)
_INSERT_CLICKS = f"""
    INSERT INTO clicks (id, tenant_id, {_CLICK.listed()})
    SELECT * FROM unnest($1::text[], $2::text[], {_CLICK.arrays()})
    ON CONFLICT (id) DO NOTHING
"""  # noqa: S608


async def insert_clicks(
    conn: asyncpg.Connection, clicks: Sequence[tuple[str, ev.LinkClicked]]
) -> None:
    """Copies of clicks, (tenant id, click) each, in one statement; a repeat is dropped."""
    await conn.execute(
        _INSERT_CLICKS,
        [c.click_id for _, c in clicks],
        [tenant_id for tenant_id, _ in clicks],
        *_CLICK.columns([c for _, c in clicks]),
    )


async def known_codes(conn: asyncpg.Connection, tenant_id: str, keys: list[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT code_key FROM codes WHERE tenant_id = $1 AND code_key = ANY($2::text[])",
        tenant_id,
        keys,
    )
    return [r["code_key"] for r in rows]


# --- attribution settings ----------------------------------------------------------------------


async def get_program(conn: asyncpg.Connection, program_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM programs WHERE id = $1", program_id)


async def get_advocate(conn: asyncpg.Connection, advocate_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM advocates WHERE id = $1", advocate_id)


async def reset_auto_block(conn: asyncpg.Connection, advocate_id: str) -> None:
    """The merchant unblocked the advocate: their denied referrals count from zero again."""
    await conn.execute(
        "UPDATE advocate_risk SET denied = 0, blocked_at = NULL WHERE advocate_id = $1",
        advocate_id,
    )


async def get_settings(conn: asyncpg.Connection, program_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM program_settings WHERE program_id = $1", program_id)


async def put_settings(
    conn: asyncpg.Connection, program_id: str, tenant_id: str, settings: dict[str, Any]
) -> asyncpg.Record | None:
    """The settings stored; None when the program's settings are another tenant's (a row
    the tenant's own reads cannot see under row-level security, found by the conflict)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO program_settings (program_id, tenant_id, settings) VALUES ($1, $2, $3)
        ON CONFLICT (program_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()
        WHERE program_settings.tenant_id = EXCLUDED.tenant_id
        RETURNING *
        """,
        program_id,
        tenant_id,
        settings,
    )
    return row


async def tenant_names_type(conn: asyncpg.Connection, tenant_id: str, type_: str) -> bool:
    found: bool = await conn.fetchval(
        """
        SELECT EXISTS (SELECT 1 FROM program_settings WHERE tenant_id = $1
                       AND settings -> 'custom_types' ? $2)
        """,
        tenant_id,
        type_,
    )
    return found

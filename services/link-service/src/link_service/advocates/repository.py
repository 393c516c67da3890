"""SQL of advocates and their codes. Functions take the caller's connection: the edge owns the
transaction; nothing here commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from link_service.advocates.domain import NewAdvocate, NewCode, Profile
from referral_events.contracts.link import CodeKind
from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page

# ---------------------------------------------------------------------------- advocates


async def insert_advocates(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    advocates: Sequence[NewAdvocate],
) -> list[asyncpg.Record]:
    """Returns only those newly enrolled (a customer already in the program is left as is)."""
    if not advocates:
        return []
    return list(
        await conn.fetch(
            """
            INSERT INTO advocates (id, tenant_id, program_id, customer_id, email, name, locale,
                                   marketing_consent, referred_by, attributes,
                                   attribute_changes)
            SELECT id, $1, $2, customer_id, email, name, locale, consent, referred_by,
                   attributes::jsonb, CASE WHEN attributes = '{}' THEN 0 ELSE 1 END
            FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                        $8::boolean[], $9::text[], $10::text[])
                 AS t(id, customer_id, email, name, locale, consent, referred_by, attributes)
            ON CONFLICT (program_id, customer_id) DO NOTHING
            RETURNING *
            """,
            tenant_id,
            program_id,
            [a.advocate_id for a in advocates],
            [a.customer_id for a in advocates],
            [a.profile.email for a in advocates],
            [a.profile.name for a in advocates],
            [a.profile.locale for a in advocates],
            [a.profile.marketing_consent for a in advocates],
            [a.referred_by for a in advocates],
            [json.dumps(dict(a.attributes), sort_keys=True) for a in advocates],
        )
    )


async def insert_attribute_changes(
    conn: asyncpg.Connection,
    tenant_id: str,
    changes: Sequence[tuple[str, int, datetime, dict[str, Any]]],
) -> None:
    """(advocate id, change number, effective_at, changes) rows."""
    if not changes:
        return
    await conn.execute(
        """
        INSERT INTO advocate_attribute_changes (advocate_id, change, tenant_id, effective_at,
                                                changes)
        SELECT a, c, $1, e, ch::jsonb
        FROM unnest($2::text[], $3::int[], $4::timestamptz[], $5::text[]) AS t(a, c, e, ch)
        """,
        tenant_id,
        [c[0] for c in changes],
        [c[1] for c in changes],
        [c[2] for c in changes],
        [json.dumps(c[3], sort_keys=True) for c in changes],
    )


async def attribute_changes(
    conn: asyncpg.Connection, advocate_id: str
) -> list[tuple[int, datetime, dict[str, Any]]]:
    rows = await conn.fetch(
        """
        SELECT change, effective_at, changes::text AS changes FROM advocate_attribute_changes
        WHERE advocate_id = $1 ORDER BY change
        """,
        advocate_id,
    )
    return [(r["change"], r["effective_at"], json.loads(r["changes"])) for r in rows]


async def set_attributes(
    conn: asyncpg.Connection, advocate_id: str, attributes: dict[str, Any], changes: int
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE advocates SET attributes = $2::text::jsonb, attribute_changes = $3,
                             updated_at = now()
        WHERE id = $1 RETURNING *
        """,
        advocate_id,
        json.dumps(attributes, sort_keys=True),
        changes,
    )
    assert row is not None
    return row


async def get_advocate_by_customer(
    conn: asyncpg.Connection, program_id: str, customer_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM advocates WHERE program_id = $1 AND customer_id = $2",
        program_id,
        customer_id,
    )


async def advocate_ids_by_customer(
    conn: asyncpg.Connection, program_id: str, customer_ids: Sequence[str]
) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT customer_id, id FROM advocates WHERE program_id = $1 AND customer_id = ANY($2)",
        program_id,
        list(customer_ids),
    )
    return {r["customer_id"]: r["id"] for r in rows}


async def get_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT * FROM advocates WHERE id = $1 AND tenant_id = $2{lock}",  # noqa: S608
        advocate_id,
        tenant_id,
    )


async def update_profile(
    conn: asyncpg.Connection, advocate_id: str, profile: Profile
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE advocates SET email = $2, name = $3, locale = $4, marketing_consent = $5,
                             version = version + 1, updated_at = now()
        WHERE id = $1 RETURNING *
        """,
        advocate_id,
        profile.email,
        profile.name,
        profile.locale,
        profile.marketing_consent,
    )
    assert row is not None
    return row


async def set_blocked(
    conn: asyncpg.Connection, *, advocate_id: str, blocked: bool, reason: str | None
) -> asyncpg.Record | None:
    """The changed advocate, or None when it already was in that state."""
    return await conn.fetchrow(
        """
        UPDATE advocates
        SET blocked = $2, block_reason = CASE WHEN $2 THEN $3 END,
            blocked_at = CASE WHEN $2 THEN now() END,
            version = version + 1, updated_at = now()
        WHERE id = $1 AND blocked <> $2 RETURNING *
        """,
        advocate_id,
        blocked,
        reason,
    )


# ---------------------------------------------------------------------------- codes


async def insert_codes(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    kind: CodeKind,
    codes: Sequence[NewCode],
) -> set[str]:
    """Returns the advocate ids whose code was free (the others draw again or give up)."""
    if not codes:
        return set()
    rows = await conn.fetch(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id, kind)
        SELECT code_key, code, $1, $2, advocate_id, $3
        FROM unnest($4::text[], $5::text[], $6::text[]) AS t(code_key, code, advocate_id)
        ON CONFLICT (code_key) DO NOTHING RETURNING advocate_id
        """,
        tenant_id,
        program_id,
        kind,
        [c.key for c in codes],
        [c.code for c in codes],
        [c.advocate_id for c in codes],
    )
    return {r["advocate_id"] for r in rows}


async def current_code(conn: asyncpg.Connection, advocate_id: str) -> str:
    code: str | None = await conn.fetchval(
        "SELECT code FROM codes WHERE advocate_id = $1 AND current", advocate_id
    )
    assert code is not None
    return code


async def aliases(conn: asyncpg.Connection, advocate_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT code FROM codes WHERE advocate_id = $1 AND NOT current ORDER BY created_at",
        advocate_id,
    )
    return [r["code"] for r in rows]


async def get_code(conn: asyncpg.Connection, code_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM codes WHERE code_key = $1", code_key)


async def retire_current_code(conn: asyncpg.Connection, advocate_id: str) -> str:
    code: str | None = await conn.fetchval(
        """
        UPDATE codes SET current = false, replaced_at = now()
        WHERE advocate_id = $1 AND current RETURNING code
        """,
        advocate_id,
    )
    assert code is not None
    return code


async def reinstate_code(conn: asyncpg.Connection, code_key: str) -> None:
    await conn.execute(
        "UPDATE codes SET current = true, replaced_at = NULL WHERE code_key = $1", code_key
    )


async def code_changes_since(conn: asyncpg.Connection, advocate_id: str, since: datetime) -> int:
    """Each change retires the code before it, so retirements count changes."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM codes WHERE advocate_id = $1 AND replaced_at >= $2",
        advocate_id,
        since,
    )
    return n


# One page of advocates with their current code and aliases, in one statement.
_ADVOCATE_PAGE = """
SELECT a.*, c.code AS current_code,
       ARRAY(SELECT x.code FROM codes x WHERE x.advocate_id = a.id AND NOT x.current
             ORDER BY x.created_at) AS alias_codes
FROM advocates a JOIN codes c ON c.advocate_id = a.id AND c.current
"""


@dataclass(frozen=True)
class AdvocateFilter:
    program_id: str | None = None
    customer_id: str | None = None
    # Any of the advocate's codes, current or earlier (compared as code_key).
    code_key: str | None = None
    blocked: bool | None = None
    created: CreatedRange = field(default_factory=CreatedRange)


async def advocate_page(
    conn: asyncpg.Connection, tenant_id: str, f: AdvocateFilter, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("a.tenant_id = {}", tenant_id)
    where.maybe("a.program_id = {}", f.program_id).maybe("a.customer_id = {}", f.customer_id)
    where.maybe(
        "a.id = (SELECT k.advocate_id FROM codes k WHERE k.code_key = {})", f.code_key
    ).maybe("a.blocked = {}", f.blocked)
    f.created.apply(where, "a.created_at")
    return await fetch_page(conn, _ADVOCATE_PAGE, where, page, alias="a")

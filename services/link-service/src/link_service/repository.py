"""All of link-service's SQL. Functions take the caller's connection: the edge owns the
transaction; nothing here commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from referral_events import outbox

# ---------------------------------------------------------------------------- programs

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


async def insert_program(
    conn: asyncpg.Connection, *, program_id: str, tenant_id: str, values: dict[str, Any]
) -> asyncpg.Record:
    cols = ", ".join(PROGRAM_COLUMNS)
    params = ", ".join(f"${i}" for i in range(3, len(PROGRAM_COLUMNS) + 3))
    row = await conn.fetchrow(
        f"INSERT INTO programs (id, tenant_id, {cols}) VALUES ($1, $2, {params}) RETURNING *",  # noqa: S608
        program_id,
        tenant_id,
        *(values[c] for c in PROGRAM_COLUMNS),
    )
    assert row is not None
    return row


async def update_program(
    conn: asyncpg.Connection, *, program_id: str, tenant_id: str, values: dict[str, Any]
) -> asyncpg.Record:
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(PROGRAM_COLUMNS, start=3))
    row = await conn.fetchrow(
        f"""
        UPDATE programs SET {sets}, version = version + 1, updated_at = now()
        WHERE id = $1 AND tenant_id = $2 RETURNING *
        """,  # noqa: S608
        program_id,
        tenant_id,
        *(values[c] for c in PROGRAM_COLUMNS),
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


async def list_programs(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM programs WHERE tenant_id = $1 ORDER BY created_at, id", tenant_id
        )
    )


# ---------------------------------------------------------------------------- advocates


async def insert_advocate(
    conn: asyncpg.Connection,
    *,
    advocate_id: str,
    tenant_id: str,
    program_id: str,
    customer_id: str,
    email: str | None,
    name: str | None,
    locale: str | None,
    marketing_consent: bool,
) -> asyncpg.Record | None:
    """None when the customer is already enrolled in the program."""
    return await conn.fetchrow(
        """
        INSERT INTO advocates (id, tenant_id, program_id, customer_id, email, name, locale,
                               marketing_consent)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (program_id, customer_id) DO NOTHING RETURNING *
        """,
        advocate_id,
        tenant_id,
        program_id,
        customer_id,
        email,
        name,
        locale,
        marketing_consent,
    )


async def get_advocate_by_customer(
    conn: asyncpg.Connection, program_id: str, customer_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM advocates WHERE program_id = $1 AND customer_id = $2",
        program_id,
        customer_id,
    )


async def get_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT * FROM advocates WHERE id = $1 AND tenant_id = $2{lock}",  # noqa: S608
        advocate_id,
        tenant_id,
    )


async def update_advocate_profile(
    conn: asyncpg.Connection,
    *,
    advocate_id: str,
    email: str | None,
    name: str | None,
    locale: str | None,
    marketing_consent: bool,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE advocates SET email = $2, name = $3, locale = $4, marketing_consent = $5,
                             version = version + 1, updated_at = now()
        WHERE id = $1 RETURNING *
        """,
        advocate_id,
        email,
        name,
        locale,
        marketing_consent,
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


async def insert_code(
    conn: asyncpg.Connection,
    *,
    code: str,
    code_key: str,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    kind: str,
) -> bool:
    """False when the code is taken (the caller draws another)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id, kind)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code_key) DO NOTHING RETURNING true
        """,
        code_key,
        code,
        tenant_id,
        program_id,
        advocate_id,
        kind,
    )
    return bool(inserted)


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


async def resolve_code(conn: asyncpg.Connection, code_key: str) -> asyncpg.Record | None:
    """Everything a redirect or a checkout lookup needs, in one round trip."""
    return await conn.fetchrow(
        """
        SELECT c.code, c.current, c.tenant_id, c.program_id, c.advocate_id,
               cur.code AS current_code,
               p.status AS program_status, p.starts_at, p.ends_at, p.landing_url,
               p.fallback_url, p.allowed_domains,
               a.blocked AS advocate_blocked
        FROM codes c
        JOIN programs p ON p.id = c.program_id
        JOIN advocates a ON a.id = c.advocate_id
        JOIN codes cur ON cur.advocate_id = c.advocate_id AND cur.current
        WHERE c.code_key = $1
        """,
        code_key,
    )


# ---------------------------------------------------------------------------- clicks

CLICK_COLUMNS = (
    "id",
    "tenant_id",
    "code",
    "program_id",
    "advocate_id",
    "channel",
    "clicked_at",
    "user_agent_family",
    "device_class",
    "referrer_host",
    "ip_hash",
    "is_bot",
    "counts",
    "inactive_reason",
)
CLICK_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "boolean",
    "boolean",
    "text",
)
_INSERT_CLICKS = f"""
INSERT INTO clicks ({", ".join(CLICK_COLUMNS)})
SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(CLICK_TYPES, 1))})
"""  # noqa: S608
_CLICKS_AND_OUTBOX_QUIET = f"""
WITH clicks_in AS ({_INSERT_CLICKS})
{outbox.insert_rows_sql(len(CLICK_TYPES) + 1)}
"""
_CLICKS_AND_OUTBOX = f"""
WITH clicks_in AS ({_INSERT_CLICKS}),
outbox_in AS ({outbox.insert_rows_sql(len(CLICK_TYPES) + 1)} RETURNING 1)
SELECT pg_notify(current_schema() || '_outbox', '') FROM (SELECT 1 FROM outbox_in LIMIT 1) x
"""  # noqa: S608


async def insert_clicks_with_events(
    conn: asyncpg.Connection,
    clicks: Sequence[Sequence[Any]],
    events: Sequence[outbox.OutboxRow],
    *,
    notify: bool = True,
) -> None:
    """Clicks and their outbox rows in ONE statement (one round trip, atomic on its own).
    `clicks` rows follow CLICK_COLUMNS; events are outbox rows. `notify` wakes
    the relay at commit with NOTIFY; without it the caller wakes the relay itself (NOTIFY
    makes Postgres serialise the commits of all notifying transactions, WAL flush included,
    which defeats the group commit of concurrent writers)."""
    columns = list(zip(*clicks, strict=True))
    sql = _CLICKS_AND_OUTBOX if notify else _CLICKS_AND_OUTBOX_QUIET
    await conn.execute(sql, *[list(c) for c in columns], *outbox.rows_of(events))


# ---------------------------------------------------------------------------- bulk enrollment


async def insert_enrollment_job(
    conn: asyncpg.Connection,
    *,
    job_id: str,
    tenant_id: str,
    program_id: str,
    fmt: str,
    file_sha256: str,
    rows: Sequence[tuple[int, int, str | None, str | None, str | None]],
) -> asyncpg.Record:
    """`rows`: (row_no, line_no, data as JSON text or None, error, field). Rows that could not
    even be parsed are stored as errors at once."""
    failed = sum(1 for r in rows if r[3] is not None)
    job = await conn.fetchrow(
        """
        INSERT INTO enrollment_jobs (id, tenant_id, program_id, format, file_sha256,
                                     total_rows, done_rows, failed, status, finished_at)
        VALUES ($1, $2, $3, $4, $5, $6::int, $7::int, $7::int,
                CASE WHEN $6::int = $7::int THEN 'done' ELSE 'queued' END,
                CASE WHEN $6::int = $7::int THEN now() END)
        RETURNING *
        """,
        job_id,
        tenant_id,
        program_id,
        fmt,
        file_sha256,
        len(rows),
        failed,
    )
    assert job is not None
    await conn.copy_records_to_table(
        "enrollment_job_rows",
        columns=["job_id", "row_no", "line_no", "data", "status", "error", "field"],
        records=[
            (job_id, row_no, line_no, data, "error" if err else "pending", err, fld)
            for row_no, line_no, data, err, fld in rows
        ],
    )
    return job


async def get_enrollment_job(
    conn: asyncpg.Connection, tenant_id: str, job_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM enrollment_jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant_id
    )


async def enrollment_errors(
    conn: asyncpg.Connection, job_id: str, after_row: int, limit: int
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT row_no, line_no, field, error FROM enrollment_job_rows
            WHERE job_id = $1 AND status = 'error' AND row_no > $2
            ORDER BY row_no LIMIT $3
            """,
            job_id,
            after_row,
            limit,
        )
    )


async def claim_enrollment_job(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """An unfinished job no other worker holds; locked until the caller's transaction ends."""
    return await conn.fetchrow(
        """
        SELECT * FROM enrollment_jobs WHERE status <> 'done'
        ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED
        """
    )


async def pending_rows(conn: asyncpg.Connection, job_id: str, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT row_no, line_no, data FROM enrollment_job_rows
            WHERE job_id = $1 AND status = 'pending' ORDER BY row_no LIMIT $2
            """,
            job_id,
            limit,
        )
    )


async def insert_advocates_bulk(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    rows: Sequence[tuple[str, str, str | None, str | None, str | None, bool]],
) -> list[asyncpg.Record]:
    """(id, customer_id, email, name, locale, consent) rows; returns only the newly enrolled."""
    if not rows:
        return []
    ids, customers, emails, names, locales, consents = (list(c) for c in zip(*rows, strict=True))
    return list(
        await conn.fetch(
            """
            INSERT INTO advocates (id, tenant_id, program_id, customer_id, email, name, locale,
                                   marketing_consent)
            SELECT id, $1, $2, customer_id, email, name, locale, consent
            FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                        $8::boolean[]) AS t(id, customer_id, email, name, locale, consent)
            ON CONFLICT (program_id, customer_id) DO NOTHING
            RETURNING id, customer_id, email, name, locale, marketing_consent
            """,
            tenant_id,
            program_id,
            ids,
            customers,
            emails,
            names,
            locales,
            consents,
        )
    )


async def advocate_ids_by_customer(
    conn: asyncpg.Connection, program_id: str, customer_ids: list[str]
) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT customer_id, id FROM advocates WHERE program_id = $1 AND customer_id = ANY($2)",
        program_id,
        customer_ids,
    )
    return {r["customer_id"]: r["id"] for r in rows}


async def insert_codes_bulk(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    codes: Sequence[tuple[str, str]],
) -> set[str]:
    """(code, advocate_id) pairs; returns the advocate ids whose code was free."""
    if not codes:
        return set()
    code_list = [c for c, _ in codes]
    rows = await conn.fetch(
        """
        INSERT INTO codes (code_key, code, tenant_id, program_id, advocate_id, kind)
        SELECT upper(code), code, $1, $2, advocate_id, 'random'
        FROM unnest($3::text[], $4::text[]) AS t(code, advocate_id)
        ON CONFLICT (code_key) DO NOTHING RETURNING advocate_id
        """,
        tenant_id,
        program_id,
        code_list,
        [a for _, a in codes],
    )
    return {r["advocate_id"] for r in rows}


async def finish_rows(
    conn: asyncpg.Connection,
    job_id: str,
    results: Sequence[tuple[int, str, str | None, str | None, str | None]],
) -> None:
    """(row_no, status, error, field, advocate_id) per processed row. The uploaded data (emails,
    names) is dropped once a row is processed: the advocate holds it now."""
    row_nos, statuses, errors, fields, advocates = (list(c) for c in zip(*results, strict=True))
    await conn.execute(
        """
        UPDATE enrollment_job_rows r
        SET status = t.status, error = t.error, field = t.field, advocate_id = t.advocate_id,
            data = NULL
        FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[])
             AS t(row_no, status, error, field, advocate_id)
        WHERE r.job_id = $1 AND r.row_no = t.row_no
        """,
        job_id,
        row_nos,
        statuses,
        errors,
        fields,
        advocates,
    )


async def advance_enrollment_job(
    conn: asyncpg.Connection, job_id: str, *, done: int, enrolled: int, existing: int, failed: int
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        UPDATE enrollment_jobs
        SET done_rows = done_rows + $2, enrolled = enrolled + $3, existing = existing + $4,
            failed = failed + $5, started_at = coalesce(started_at, now()),
            status = CASE WHEN done_rows + $2 >= total_rows THEN 'done' ELSE 'running' END,
            finished_at = CASE WHEN done_rows + $2 >= total_rows THEN now() END
        WHERE id = $1 RETURNING *
        """,
        job_id,
        done,
        enrolled,
        existing,
        failed,
    )
    assert row is not None
    return row


def as_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

"""SQL of bulk-enrollment jobs and their rows. Functions take the caller's connection: the edge
owns the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from link_service.enrollment.domain import ParsedFile, RowOutcome
from servicekit.pagination import Keyset, PageQuery, Where, fetch_page


async def insert_enrollment_job(
    conn: asyncpg.Connection,
    *,
    job_id: str,
    tenant_id: str,
    program_id: str,
    parsed: ParsedFile,
) -> asyncpg.Record:
    """Rows that could not even be parsed are stored as errors at once."""
    rows = parsed.rows
    failed = sum(1 for r in rows if r.error is not None)
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
        parsed.format,
        parsed.sha256,
        len(rows),
        failed,
    )
    assert job is not None
    await conn.copy_records_to_table(
        "enrollment_job_rows",
        columns=["job_id", "row_no", "line_no", "data", "status", "error", "field"],
        records=[
            (job_id, row_no, line_no, data, "error" if error else "pending", error, field)
            for row_no, line_no, data, error, field in rows
        ],
    )
    return job


async def get_enrollment_job(
    conn: asyncpg.Connection, tenant_id: str, job_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM enrollment_jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant_id
    )


async def job_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id).add("program_id = {}", program_id)
    return await fetch_page(conn, "SELECT * FROM enrollment_jobs", where, page)


# A job's errors in row order.
ERROR_ORDER = Keyset(time=None, id="row_no", numeric_id=True)


async def error_page(
    conn: asyncpg.Connection, job_id: str, after_row: int, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("job_id = {}", job_id).add("status = 'error' AND row_no > {}", after_row)
    select = "SELECT row_no, line_no, field, error FROM enrollment_job_rows"
    return await fetch_page(conn, select, where, page, ERROR_ORDER)


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


async def claim_enrollment_job(
    conn: asyncpg.Connection, resting: list[str]
) -> asyncpg.Record | None:
    """An unfinished job no other worker holds, the one with the fewest rows done (jobs take
    turns, chunk by chunk, instead of the oldest holding every worker), none of `resting`;
    locked until the caller's transaction ends."""
    return await conn.fetchrow(
        """
        SELECT * FROM enrollment_jobs WHERE status <> 'done' AND id <> ALL($1::text[])
        ORDER BY done_rows, created_at LIMIT 1 FOR UPDATE SKIP LOCKED
        """,
        resting,
    )


async def fail_pending_rows(conn: asyncpg.Connection, job_id: str, reason: str) -> int:
    done: str = await conn.execute(
        """
        UPDATE enrollment_job_rows SET status = 'error', error = $2, field = NULL, data = NULL
        WHERE job_id = $1 AND status = 'pending'
        """,
        job_id,
        reason,
    )
    return int(done.split()[-1])


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


async def finish_rows(
    conn: asyncpg.Connection, job_id: str, outcomes: Sequence[RowOutcome]
) -> None:
    """The uploaded data (emails, names) is dropped once a row is processed: the advocate
    holds it now."""
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
        [o.row_no for o in outcomes],
        [o.status for o in outcomes],
        [o.error for o in outcomes],
        [o.field for o in outcomes],
        [o.advocate_id for o in outcomes],
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

"""Use cases of bulk enrollment. Each takes the caller's connection (the edge's transaction:
the HTTP route's, or the worker's one per chunk)."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from link_service.advocates.handlers import enroll, new_advocate
from link_service.advocates.repository import advocate_ids_by_customer
from link_service.audience.handlers import audience_of
from link_service.domain import Links
from link_service.enrollment import domain, repository
from link_service.programs.domain import check_takes_new_advocates
from link_service.programs.handlers import get_program
from referral_events.database_errors import INFRASTRUCTURE_ERRORS
from servicekit.ids import new_id
from servicekit.pagination import PageQuery
from servicekit.problems import InvalidInput, NotFound


async def create_enrollment_job(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    parsed: domain.ParsedFile,
) -> asyncpg.Record:
    program = await get_program(conn, tenant_id, program_id)
    check_takes_new_advocates(program["status"])
    return await repository.insert_enrollment_job(
        conn, job_id=new_id("enj"), tenant_id=tenant_id, program_id=program_id, parsed=parsed
    )


async def get_enrollment_job(
    conn: asyncpg.Connection, tenant_id: str, job_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    job = await repository.get_enrollment_job(conn, tenant_id, job_id)
    if job is None:
        raise NotFound(f"no enrollment job '{job_id}'", field="/job_id")
    return job, await repository.enrollment_errors(conn, job_id, 0, 100)


async def job_page(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    """One page of a program's enrollment jobs (404 for a program the workspace lacks)."""
    await get_program(conn, tenant_id, program_id)
    return await repository.job_page(conn, tenant_id, program_id, page)


async def error_page(
    conn: asyncpg.Connection, tenant_id: str, job_id: str, after_row: int, page: PageQuery
) -> list[asyncpg.Record]:
    if await repository.get_enrollment_job(conn, tenant_id, job_id) is None:
        raise NotFound(f"no enrollment job '{job_id}'", field="job_id")
    return await repository.error_page(conn, job_id, after_row, page)


async def enrollment_errors(
    conn: asyncpg.Connection, tenant_id: str, job_id: str, after_row: int, limit: int
) -> list[asyncpg.Record]:
    if await repository.get_enrollment_job(conn, tenant_id, job_id) is None:
        raise NotFound(f"no enrollment job '{job_id}'", field="/job_id")
    return await repository.enrollment_errors(conn, job_id, after_row, limit)


class ChunkFailed(Exception):
    """A chunk of `job_id` failed for a reason of its own (not the database being away)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


async def enroll_chunk(
    conn: asyncpg.Connection, links: Links, chunk_rows: int, resting: Collection[str] = ()
) -> int | None:
    """Processes the next chunk of the open job with the fewest rows done (so a small job of
    one workspace is not stuck behind another's large one; `resting`: jobs not to claim now),
    set-based (a few statements per chunk, not per row), through the same enrollment as a
    single advocate's. Returns the rows processed, or None when no job waits; raises
    ChunkFailed when the chunk fails for a reason of its own."""
    job = await repository.claim_enrollment_job(conn, list(resting))
    if job is None:
        return None
    try:
        return await _enroll_chunk(conn, job, links, chunk_rows)
    except INFRASTRUCTURE_ERRORS:
        raise  # the database away: retried without counting against the job
    except Exception as exc:
        raise ChunkFailed(job["id"]) from exc


async def fail_enrollment_job(conn: asyncpg.Connection, job_id: str, reason: str) -> int:
    """Gives up on a job whose chunks keep failing: its unprocessed rows become errors saying
    why, and the job finishes (with them counted as failed)."""
    failed = await repository.fail_pending_rows(conn, job_id, reason)
    await repository.advance_enrollment_job(
        conn, job_id, done=failed, enrolled=0, existing=0, failed=failed
    )
    return failed


async def _enroll_chunk(
    conn: asyncpg.Connection, job: asyncpg.Record, links: Links, chunk_rows: int
) -> int:
    tenant_id, program_id = job["tenant_id"], job["program_id"]
    rows = await repository.pending_rows(conn, job["id"], chunk_rows)
    if not rows:
        await repository.advance_enrollment_job(
            conn, job["id"], done=0, enrolled=0, existing=0, failed=0
        )
        return 0
    program = await get_program(conn, tenant_id, program_id)
    chunk = domain.read_chunk((r["row_no"], r["data"]) for r in rows)
    # Attributes and eligibility by the single enrollment's rule; a customer enrolled before is
    # "existing" whatever this row says, as for a single enrollment.
    aud = await audience_of(conn, tenant_id, program_id)
    existing = await advocate_ids_by_customer(conn, program_id, list(chunk.wanted))
    candidates = []
    for customer_id, (row_no, cmd) in list(chunk.wanted.items()):
        if customer_id in existing:
            continue
        try:
            candidates.append(new_advocate(cmd, aud))
        except InvalidInput as exc:
            del chunk.wanted[customer_id]
            chunk.settled.append(domain.RowOutcome(row_no, "error", exc.detail, exc.field))
    enrolled = await enroll(conn, tenant_id, program, candidates, links)
    new = {e.advocate["customer_id"]: e.advocate["id"] for e in enrolled}
    existing.update(
        await advocate_ids_by_customer(
            conn, program_id, [c for c in chunk.wanted if c not in new and c not in existing]
        )
    )
    outcomes = domain.outcomes(chunk, new, existing)
    await repository.finish_rows(conn, job["id"], outcomes)
    statuses = [o.status for o in outcomes]
    await repository.advance_enrollment_job(
        conn,
        job["id"],
        done=len(outcomes),
        enrolled=statuses.count("enrolled"),
        existing=statuses.count("existing"),
        failed=statuses.count("error"),
    )
    return len(outcomes)

"""HTTP routes of bulk-enrollment jobs: parse, authenticate, open the transaction, call a
handler, shape the answer."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query, Request, Response

from link_service.enrollment import domain, handlers
from link_service.enrollment.repository import ERROR_ORDER
from link_service.enrollment.schemas import (
    EnrollmentError,
    EnrollmentJobOut,
)
from link_service.web import Auth, Rt, link_state, settings
from servicekit.auth import requires
from servicekit.pagination import Page, PageParams
from servicekit.problems import PayloadTooLarge

router = APIRouter()

# Its bodies are bounded by ENROLLMENT_MAX_UPLOAD_BYTES, not MAX_BODY_BYTES (main.py).
UPLOAD_PATH = "/v1/programs/{program_id}/enrollment-jobs"

# Bytes handed to the parser at once: a thread hop per batch, not per network chunk.
_PARSE_BATCH = 1024 * 1024


def _job_out(job: asyncpg.Record, errors: list[asyncpg.Record]) -> EnrollmentJobOut:
    return EnrollmentJobOut(
        id=job["id"],
        program_id=job["program_id"],
        format=job["format"],
        status=job["status"],
        total_rows=job["total_rows"],
        done_rows=job["done_rows"],
        enrolled=job["enrolled"],
        existing=job["existing"],
        failed=job["failed"],
        errors=[_error_out(e) for e in errors],
        created_at=job["created_at"],
        started_at=job["started_at"],
        finished_at=job["finished_at"],
    )


def _error_out(e: asyncpg.Record) -> EnrollmentError:
    return EnrollmentError(row=e["row_no"], line=e["line_no"], field=e["field"], message=e["error"])


@router.post(
    UPLOAD_PATH,
    dependencies=[requires("advocates:write")],
    status_code=202,
    response_model=EnrollmentJobOut,
    tags=["advocates"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def create_enrollment_job(
    program_id: str,
    request: Request,
    response: Response,
    who: Auth,
    rt: Rt,
    format: Literal["csv", "ndjson"] | None = None,
) -> EnrollmentJobOut:
    """Bulk enrollment from a CSV (header: customer_id[,email,name,locale,marketing_consent])
    or NDJSON file. Answers 202 with the job; poll it for progress and row errors. Enrolling
    is idempotent per customer, so uploading the same file again changes nothing."""
    fmt = domain.detect_format(request.headers.get("content-type"), format)
    s = settings(rt)
    limit = s.enrollment_max_upload_bytes
    # Parsed as it streams in, a batch of chunks at a time off the event loop (redirects keep
    # flowing); refused past the byte or row cap without reading on.
    parser = domain.StreamParser(fmt, s.enrollment_max_rows)
    batch: list[bytes] = []
    size = held = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file exceeds {limit} bytes", field="/file")
        batch.append(chunk)
        held += len(chunk)
        if held >= _PARSE_BATCH:
            await asyncio.to_thread(parser.feed, b"".join(batch))
            batch, held = [], 0
    await asyncio.to_thread(parser.feed, b"".join(batch))
    parsed = await asyncio.to_thread(parser.finish)
    async with rt.transaction() as conn:
        job = await handlers.create_enrollment_job(conn, who.tenant_id, program_id, parsed)
        errors = await handlers.enrollment_errors(conn, who.tenant_id, job["id"], 0, 100)
    worker = link_state(request).enrollment
    if worker is not None:
        worker.wake.set()
    response.headers["Location"] = f"/v1/enrollment-jobs/{job['id']}"
    return _job_out(job, errors)


@router.get(
    "/v1/programs/{program_id}/enrollment-jobs",
    dependencies=[requires("advocates:read")],
    response_model=Page[EnrollmentJobOut],
    tags=["advocates"],
)
async def list_enrollment_jobs(
    program_id: str, who: Auth, rt: Rt, page: PageParams
) -> Page[EnrollmentJobOut]:
    """The program's jobs, oldest first; each without its errors (GET the job for those)."""
    async with rt.transaction() as conn:
        rows = await handlers.job_page(conn, who.tenant_id, program_id, page)
    return page.answer(rows, lambda job: _job_out(job, []))


@router.get(
    "/v1/enrollment-jobs/{job_id}",
    dependencies=[requires("advocates:read")],
    response_model=EnrollmentJobOut,
    tags=["advocates"],
)
async def get_enrollment_job(job_id: str, who: Auth, rt: Rt) -> EnrollmentJobOut:
    async with rt.transaction() as conn:
        job, errors = await handlers.get_enrollment_job(conn, who.tenant_id, job_id)
    return _job_out(job, errors)


@router.get(
    "/v1/enrollment-jobs/{job_id}/errors",
    dependencies=[requires("advocates:read")],
    response_model=Page[EnrollmentError],
    tags=["advocates"],
)
async def enrollment_job_errors(
    job_id: str,
    who: Auth,
    rt: Rt,
    page: PageParams,
    after_row: Annotated[int, Query(ge=0, description="only rows after this one")] = 0,
) -> Page[EnrollmentError]:
    """The job's errors in row order."""
    async with rt.transaction() as conn:
        rows = await handlers.error_page(conn, who.tenant_id, job_id, after_row, page)
    return page.answer(rows, _error_out, ERROR_ORDER)

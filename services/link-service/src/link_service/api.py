"""HTTP routes: parse, authenticate, open the transaction, call a handler, shape the answer.

`/r/{code}` is answered by redirect.RedirectMiddleware before routing; the routes declared here
for it answer only with the front door off, through the same code."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import asyncpg
import segno
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse

from link_service import bulk, domain, handlers
from link_service.config import Settings
from link_service.redirect import LinkState
from link_service.redirect import answer as redirect_answer
from link_service.schemas import (
    AdvocateIn,
    AdvocateOut,
    AdvocatePatch,
    BlockIn,
    Channel,
    CodeFormatOut,
    CodeOut,
    EnrollmentError,
    EnrollmentErrorsOut,
    EnrollmentJobOut,
    ProgramIn,
    ProgramList,
    ProgramOut,
    ProgramPatch,
    ShareLinkOut,
    ShareLinksOut,
    VanityCodeIn,
)
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.front import RawAnswer
from servicekit.problems import DomainError
from servicekit.runtime import Runtime

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]


class PayloadTooLarge(DomainError):
    status = 413
    title = "Payload too large"


def _settings(rt: Runtime) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


def _state(request: Request) -> LinkState:
    state: LinkState = request.app.state.links
    return state


def _links(rt: Runtime) -> handlers.Links:
    s = _settings(rt)
    return handlers.Links(s.public_base_url, s.code_length)


def _program_out(row: asyncpg.Record) -> ProgramOut:
    return ProgramOut(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        live=domain.program_is_live(
            row["status"], row["starts_at"], row["ends_at"], datetime.now(UTC)
        ),
        landing_url=row["landing_url"],
        fallback_url=row["fallback_url"],
        allowed_domains=list(row["allowed_domains"]),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        default_locale=row["default_locale"],
        code_format=CodeFormatOut(
            length=row["code_length"], alphabet=row["code_alphabet"], prefix=row["code_prefix"]
        ),
        vanity_allowed=row["vanity_allowed"],
        share_templates=dict(row["share_templates"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _advocate_out(rt: Runtime, view: handlers.AdvocateView) -> AdvocateOut:
    row = view.advocate
    return AdvocateOut(
        id=row["id"],
        program_id=row["program_id"],
        customer_id=row["customer_id"],
        email=row["email"],
        name=row["name"],
        locale=row["locale"],
        marketing_consent=row["marketing_consent"],
        blocked=row["blocked"],
        block_reason=row["block_reason"],
        code=view.code,
        aliases=view.aliases,
        link=_links(rt).link(view.code),
        version=row["version"],
        created_at=row["created_at"],
    )


# ---------------------------------------------------------------------------- programs


@router.post("/v1/programs", status_code=201, response_model=ProgramOut, tags=["programs"])
async def create_program(body: ProgramIn, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        return _program_out(await handlers.create_program(conn, who.tenant_id, body, _links(rt)))


@router.get("/v1/programs", response_model=ProgramList, tags=["programs"])
async def list_programs(who: Auth, rt: Rt) -> ProgramList:
    async with rt.transaction() as conn:
        rows = await handlers.list_programs(conn, who.tenant_id)
    return ProgramList(items=[_program_out(r) for r in rows])


@router.get("/v1/programs/{program_id}", response_model=ProgramOut, tags=["programs"])
async def get_program(program_id: str, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        return _program_out(await handlers.get_program(conn, who.tenant_id, program_id))


async def _update_program(
    program_id: str, change: ProgramIn | ProgramPatch, who: Principal, rt: Runtime, request: Request
) -> ProgramOut:
    async with rt.transaction() as conn:
        row = await handlers.update_program(conn, who.tenant_id, program_id, change, _links(rt))
    # This replica at once; the others when they read program.updated.
    _state(request).cache.invalidate_program(program_id)
    return _program_out(row)


@router.put("/v1/programs/{program_id}", response_model=ProgramOut, tags=["programs"])
async def replace_program(
    program_id: str, body: ProgramIn, who: Auth, rt: Rt, request: Request
) -> ProgramOut:
    return await _update_program(program_id, body, who, rt, request)


@router.patch("/v1/programs/{program_id}", response_model=ProgramOut, tags=["programs"])
async def patch_program(
    program_id: str, body: ProgramPatch, who: Auth, rt: Rt, request: Request
) -> ProgramOut:
    return await _update_program(program_id, body, who, rt, request)


# ---------------------------------------------------------------------------- advocates


@router.post(
    "/v1/programs/{program_id}/advocates",
    status_code=201,
    response_model=AdvocateOut,
    tags=["advocates"],
    responses={200: {"model": AdvocateOut, "description": "already enrolled"}},
)
async def enroll_advocate(
    program_id: str, body: AdvocateIn, who: Auth, rt: Rt, response: Response
) -> AdvocateOut:
    async with rt.transaction() as conn:
        result = await handlers.enroll_advocate(conn, who.tenant_id, program_id, body, _links(rt))
    if not result.created:
        response.status_code = 200
    return _advocate_out(rt, result.view)


@router.get("/v1/advocates/{advocate_id}", response_model=AdvocateOut, tags=["advocates"])
async def get_advocate(advocate_id: str, who: Auth, rt: Rt) -> AdvocateOut:
    async with rt.transaction() as conn:
        return _advocate_out(rt, await handlers.get_advocate(conn, who.tenant_id, advocate_id))


@router.patch("/v1/advocates/{advocate_id}", response_model=AdvocateOut, tags=["advocates"])
async def update_advocate(advocate_id: str, body: AdvocatePatch, who: Auth, rt: Rt) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.update_advocate(conn, who.tenant_id, advocate_id, body, _links(rt))
    return _advocate_out(rt, view)


@router.post("/v1/advocates/{advocate_id}/block", response_model=AdvocateOut, tags=["advocates"])
async def block_advocate(
    advocate_id: str, who: Auth, rt: Rt, request: Request, body: BlockIn | None = None
) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.set_blocked(
            conn, who.tenant_id, advocate_id, blocked=True, reason=body.reason if body else None
        )
    _state(request).cache.invalidate_advocate(advocate_id)
    return _advocate_out(rt, view)


@router.post("/v1/advocates/{advocate_id}/unblock", response_model=AdvocateOut, tags=["advocates"])
async def unblock_advocate(advocate_id: str, who: Auth, rt: Rt, request: Request) -> AdvocateOut:
    async with rt.transaction() as conn:
        view = await handlers.set_blocked(conn, who.tenant_id, advocate_id, blocked=False)
    _state(request).cache.invalidate_advocate(advocate_id)
    return _advocate_out(rt, view)


@router.put("/v1/advocates/{advocate_id}/code", response_model=AdvocateOut, tags=["codes"])
async def set_vanity_code(
    advocate_id: str, body: VanityCodeIn, who: Auth, rt: Rt, request: Request
) -> AdvocateOut:
    """Sets a vanity code (when the program allows them); the previous code keeps redirecting."""
    s = _settings(rt)
    limits = handlers.CodeLimits(s.vanity_changes_max, timedelta(days=s.vanity_changes_window_days))
    async with rt.transaction() as conn:
        view, previous = await handlers.set_vanity_code(
            conn, who.tenant_id, advocate_id, body.code, _links(rt), limits
        )
    if previous is not None:
        _state(request).cache.invalidate_codes([view.code, previous])
    return _advocate_out(rt, view)


@router.get("/v1/advocates/{advocate_id}/share-links", response_model=ShareLinksOut, tags=["codes"])
async def share_links(advocate_id: str, who: Auth, rt: Rt) -> ShareLinksOut:
    async with rt.transaction() as conn:
        view, channels = await handlers.share_links(conn, who.tenant_id, advocate_id, _links(rt))
    return ShareLinksOut(
        advocate_id=advocate_id,
        code=view.code,
        link=_links(rt).link(view.code),
        channels=[
            ShareLinkOut(
                channel=c.channel,
                url=c.url,
                message=c.message,
                intent_url=c.intent_url,
            )
            for c in channels
        ],
    )


@router.get(
    "/v1/advocates/{advocate_id}/qr",
    tags=["codes"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
async def qr_code(
    advocate_id: str,
    who: Auth,
    rt: Rt,
    format: Literal["png", "svg"] = "png",
    channel: Channel | None = None,
    scale: Annotated[int, Query(ge=1, le=40)] = 8,
) -> Response:
    """A QR code of the advocate's link (or of one channel's link)."""
    async with rt.transaction() as conn:
        view = await handlers.get_advocate(conn, who.tenant_id, advocate_id)
    s = _settings(rt)
    link = domain.share_link(s.public_base_url, view.code, channel, view.advocate["program_id"])

    def render() -> bytes:
        buffer = io.BytesIO()
        qr = segno.make(link, error="m", micro=False)
        qr.save(buffer, kind=format, scale=scale, border=4)
        return buffer.getvalue()

    body = await asyncio.to_thread(render)
    return Response(
        body,
        media_type="image/png" if format == "png" else "image/svg+xml",
        headers={"Cache-Control": "private, max-age=300", "X-Link": link},
    )


# ---------------------------------------------------------------------------- codes


@router.get("/v1/codes/{code}", response_model=CodeOut, tags=["codes"])
async def get_code(code: str, who: Auth, rt: Rt) -> CodeOut:
    """For checkouts where a friend types a code: whose it is and whether it can earn."""
    async with rt.transaction() as conn:
        found = await handlers.lookup_code(conn, who.tenant_id, code)
    row = found.row
    return CodeOut(
        code=row["current_code"],
        matched=row["code"],
        alias=not row["current"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        can_earn=found.can_earn,
        reason=found.reason,
    )


# ---------------------------------------------------------------------------- bulk enrollment


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
    "/v1/programs/{program_id}/enrollment-jobs",
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
    fmt = bulk.detect_format(request.headers.get("content-type"), format)
    limit = _settings(rt).enrollment_max_upload_bytes
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file exceeds {limit} bytes", field="file")
        chunks.append(chunk)
    # Parsing 100,000 rows takes a moment: off the event loop, so redirects keep flowing.
    parsed = await asyncio.to_thread(bulk.parse_file, b"".join(chunks), fmt)
    async with rt.transaction() as conn:
        job = await handlers.create_enrollment_job(conn, who.tenant_id, program_id, parsed)
        errors = await handlers.enrollment_errors(conn, who.tenant_id, job["id"], 0, 100)
    state = _state(request)
    if state.enrollment is not None:
        state.enrollment.wake.set()
    response.headers["Location"] = f"/v1/enrollment-jobs/{job['id']}"
    return _job_out(job, errors)


@router.get("/v1/enrollment-jobs/{job_id}", response_model=EnrollmentJobOut, tags=["advocates"])
async def get_enrollment_job(job_id: str, who: Auth, rt: Rt) -> EnrollmentJobOut:
    async with rt.transaction() as conn:
        job, errors = await handlers.get_enrollment_job(conn, who.tenant_id, job_id)
    return _job_out(job, errors)


@router.get(
    "/v1/enrollment-jobs/{job_id}/errors", response_model=EnrollmentErrorsOut, tags=["advocates"]
)
async def enrollment_job_errors(
    job_id: str,
    who: Auth,
    rt: Rt,
    after_row: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EnrollmentErrorsOut:
    async with rt.transaction() as conn:
        rows = await handlers.enrollment_errors(conn, who.tenant_id, job_id, after_row, limit)
    return EnrollmentErrorsOut(
        items=[_error_out(e) for e in rows],
        next_after_row=rows[-1]["row_no"] if len(rows) == limit else None,
    )


# ---------------------------------------------------------------------------- redirect
# Answered by redirect.RedirectMiddleware in front of FastAPI; here when the front door is off
# (FRONT_DOOR=false), with the same code (redirect.answer). HEAD is declared apart: FastAPI
# adds it to no GET route, and one operation per method would repeat the docs.


@router.get("/r/{code}", tags=["redirect"], response_class=HTMLResponse, status_code=302)
@router.head("/r/{code}", include_in_schema=False)
async def redirect(code: str, request: Request) -> Response:
    """302 to the program's landing URL with `ref` and a new `click_id`; `?to=` a path or URL
    on an allowed domain deep-links; utm_* parameters are passed on. Unknown code: 404 page.
    HEAD answers the same without recording a click."""
    return _redirect(request)


@router.get("/r/{code}/{channel}", tags=["redirect"], response_class=HTMLResponse, status_code=302)
@router.head("/r/{code}/{channel}", include_in_schema=False)
async def redirect_channel(
    code: str,
    request: Request,
    channel: Annotated[
        str, Path(description=f"{', '.join(domain.SHARE_CHANNELS)}; anything else: none")
    ],
) -> Response:
    """As `/r/{code}`, recording the share channel the link was sent through."""
    return _redirect(request)


@router.get("/r/{path:path}", include_in_schema=False)
@router.head("/r/{path:path}", include_in_schema=False)
async def redirect_elsewhere(path: str, request: Request) -> Response:
    """Any other path under /r/: the not-found page, as the redirect answers it."""
    return _redirect(request)


def _redirect(request: Request) -> Response:
    state = _state(request)
    return RawAnswer(lambda scope, send: redirect_answer(state, scope, send))

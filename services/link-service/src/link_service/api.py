"""HTTP routes: parse, authenticate, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from link_service import handlers
from link_service.config import Settings
from link_service.schemas import AdvocateIn, AdvocateOut, CodeOut, ProgramIn, ProgramOut
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]


def _settings(rt: Runtime) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


def _program_out(row: asyncpg.Record) -> ProgramOut:
    return ProgramOut(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        landing_url=row["landing_url"],
        allowed_domains=list(row["allowed_domains"]),
        created_at=row["created_at"],
    )


def _advocate_out(rt: Runtime, row: asyncpg.Record, code: str) -> AdvocateOut:
    base = _settings(rt).public_base_url.rstrip("/")
    return AdvocateOut(
        id=row["id"],
        program_id=row["program_id"],
        customer_id=row["customer_id"],
        email=row["email"],
        name=row["name"],
        locale=row["locale"],
        blocked=row["blocked"],
        code=code,
        link=f"{base}/r/{code}",
        created_at=row["created_at"],
    )


@router.post("/v1/programs", status_code=201, response_model=ProgramOut, tags=["programs"])
async def create_program(body: ProgramIn, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        return _program_out(await handlers.create_program(conn, who.tenant_id, body))


@router.get("/v1/programs/{program_id}", response_model=ProgramOut, tags=["programs"])
async def get_program(program_id: str, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        return _program_out(await handlers.get_program(conn, who.tenant_id, program_id))


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
        result = await handlers.enroll_advocate(
            conn, who.tenant_id, program_id, body, _settings(rt).code_length
        )
    if not result.created:
        response.status_code = 200
    return _advocate_out(rt, result.advocate, result.code)


@router.get("/v1/advocates/{advocate_id}", response_model=AdvocateOut, tags=["advocates"])
async def get_advocate(advocate_id: str, who: Auth, rt: Rt) -> AdvocateOut:
    async with rt.transaction() as conn:
        advocate, code = await handlers.get_advocate(conn, who.tenant_id, advocate_id)
    return _advocate_out(rt, advocate, code)


@router.get("/v1/codes/{code}", response_model=CodeOut, tags=["codes"])
async def get_code(code: str, who: Auth, rt: Rt) -> CodeOut:
    async with rt.transaction() as conn:
        row = await handlers.lookup_code(conn, who.tenant_id, code)
    return CodeOut(
        code=row["code"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        can_earn=row["program_status"] == "active" and not row["advocate_blocked"],
    )


NOT_FOUND_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Link not found</title>
</head><body><h1>This referral link does not exist</h1>
<p>Check the link you were sent, or ask your friend for a new one.</p></body></html>"""


@router.get("/r/{code}", include_in_schema=True, tags=["redirect"], response_model=None)
async def redirect(code: str, request: Request, rt: Rt) -> Response:
    ctx = handlers.ClickContext(
        channel=None,
        user_agent=request.headers.get("user-agent"),
        referrer=request.headers.get("referer"),
        client_ip=request.client.host if request.client else None,
    )
    async with rt.transaction() as conn:
        target = await handlers.record_click(conn, code, ctx, _settings(rt).ip_hash_key)
    if target is None:
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})

"""HTTP routes of programs: parse, authenticate, open the transaction, call a handler, shape the
answer."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
from fastapi import APIRouter, Request

from link_service.domain import program_is_live
from link_service.programs import handlers
from link_service.programs.domain import stored_code_format
from link_service.programs.schemas import (
    CodeFormatOut,
    ProgramIn,
    ProgramOut,
    ProgramPatch,
)
from link_service.web import Auth, Rt, link_state, settings
from servicekit.auth import Principal, requires
from servicekit.pagination import CreatedParams, Page, PageParams
from servicekit.runtime import Runtime

router = APIRouter()


def _program_out(row: asyncpg.Record) -> ProgramOut:
    return ProgramOut(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        live=program_is_live(row["status"], row["starts_at"], row["ends_at"], datetime.now(UTC)),
        landing_url=row["landing_url"],
        fallback_url=row["fallback_url"],
        allowed_domains=list(row["allowed_domains"]),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        default_locale=row["default_locale"],
        code_format=CodeFormatOut(**dataclasses.asdict(stored_code_format(row))),
        vanity_allowed=row["vanity_allowed"],
        share_templates=dict(row["share_templates"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@router.post(
    "/v1/programs",
    dependencies=[requires("programs:write")],
    status_code=201,
    response_model=ProgramOut,
    tags=["programs"],
)
async def create_program(body: ProgramIn, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        row = await handlers.create_program(conn, who.tenant_id, body, settings(rt).code_length)
    return _program_out(row)


@router.get(
    "/v1/programs",
    dependencies=[requires("programs:read")],
    response_model=Page[ProgramOut],
    tags=["programs"],
)
async def list_programs(
    who: Auth, rt: Rt, page: PageParams, created: CreatedParams
) -> Page[ProgramOut]:
    async with rt.transaction() as conn:
        rows = await handlers.program_page(conn, who.tenant_id, created, page)
    return page.answer(rows, _program_out)


@router.get(
    "/v1/programs/{program_id}",
    dependencies=[requires("programs:read")],
    response_model=ProgramOut,
    tags=["programs"],
)
async def get_program(program_id: str, who: Auth, rt: Rt) -> ProgramOut:
    async with rt.transaction() as conn:
        return _program_out(await handlers.get_program(conn, who.tenant_id, program_id))


async def _update_program(
    program_id: str, change: ProgramIn | ProgramPatch, who: Principal, rt: Runtime, request: Request
) -> ProgramOut:
    async with rt.transaction() as conn:
        row = await handlers.update_program(
            conn, who.tenant_id, program_id, change, settings(rt).code_length
        )
    # This replica at once; the others when they read program.updated.
    link_state(request).cache.invalidate_program(program_id)
    return _program_out(row)


@router.put(
    "/v1/programs/{program_id}",
    dependencies=[requires("programs:write")],
    response_model=ProgramOut,
    tags=["programs"],
)
async def replace_program(
    program_id: str, body: ProgramIn, who: Auth, rt: Rt, request: Request
) -> ProgramOut:
    return await _update_program(program_id, body, who, rt, request)


@router.patch(
    "/v1/programs/{program_id}",
    dependencies=[requires("programs:write")],
    response_model=ProgramOut,
    tags=["programs"],
)
async def patch_program(
    program_id: str, body: ProgramPatch, who: Auth, rt: Rt, request: Request
) -> ProgramOut:
    return await _update_program(program_id, body, who, rt, request)

"""Use cases of programs. Each takes the caller's connection (the edge's transaction), changes
state through the repository and emits the implied events through the outbox."""

from __future__ import annotations

import dataclasses

import asyncpg

from link_service.programs import domain, events, repository
from link_service.programs.schemas import ProgramIn, ProgramPatch
from servicekit.ids import new_id
from servicekit.pagination import CreatedRange, PageQuery
from servicekit.problems import InvalidInput, NotFound

# PATCH may not clear these (they have no "unset" value).
_REQUIRED = ("name", "landing_url", "status", "default_locale", "vanity_allowed")


def _validated(cmd: ProgramIn, default_code_length: int) -> domain.ProgramSettings:
    domain.check_window(cmd.starts_at, cmd.ends_at)
    fmt = domain.validate_code_format(
        cmd.code_format.length or default_code_length,
        cmd.code_format.alphabet,
        cmd.code_format.prefix,
    )
    return domain.ProgramSettings(
        name=cmd.name,
        status=cmd.status,
        landing_url=cmd.landing_url,
        allowed_domains=domain.normalize_domains(
            cmd.landing_url, cmd.allowed_domains, cmd.fallback_url
        ),
        starts_at=cmd.starts_at,
        ends_at=cmd.ends_at,
        fallback_url=cmd.fallback_url,
        default_locale=cmd.default_locale,
        code_format=fmt,
        vanity_allowed=cmd.vanity_allowed,
        share_templates=domain.validate_share_templates(cmd.share_templates),
    )


async def create_program(
    conn: asyncpg.Connection, tenant_id: str, cmd: ProgramIn, default_code_length: int
) -> asyncpg.Record:
    program = await repository.insert_program(
        conn,
        program_id=new_id("prg"),
        tenant_id=tenant_id,
        program=_validated(cmd, default_code_length),
    )
    await events.publish(conn, events.program_created(program), tenant_id)
    return program


async def get_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, *, for_update: bool = False
) -> asyncpg.Record:
    program = await repository.get_program(conn, tenant_id, program_id, for_update=for_update)
    if program is None:
        raise NotFound(f"no program '{program_id}'", field="/program_id")
    return program


async def program_page(
    conn: asyncpg.Connection, tenant_id: str, created: CreatedRange, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.program_page(conn, tenant_id, created, page)


def _patched(old: asyncpg.Record, change: ProgramPatch) -> ProgramIn:
    """The stored program with the fields the PATCH sent replaced, validated as a whole."""
    current = ProgramIn(
        name=old["name"],
        landing_url=old["landing_url"],
        allowed_domains=list(old["allowed_domains"]),
        status=old["status"],
        starts_at=old["starts_at"],
        ends_at=old["ends_at"],
        fallback_url=old["fallback_url"],
        default_locale=old["default_locale"],
        code_format=dataclasses.asdict(domain.stored_code_format(old)),
        vanity_allowed=old["vanity_allowed"],
        share_templates=dict(old["share_templates"]),
    )
    sent = change.model_dump(include=change.model_fields_set)
    for name in _REQUIRED:
        if name in sent and sent[name] is None:
            raise InvalidInput(f"{name} cannot be null", field=f"/{name}")
    return ProgramIn.model_validate(current.model_copy(update=sent).model_dump())


async def update_program(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    change: ProgramIn | ProgramPatch,
    default_code_length: int,
) -> asyncpg.Record:
    """PUT (a whole ProgramIn) or PATCH (only the fields sent). Emits the whole new state."""
    old = await get_program(conn, tenant_id, program_id, for_update=True)
    cmd = _patched(old, change) if isinstance(change, ProgramPatch) else change
    domain.check_status_change(old["status"], cmd.status)
    program = await repository.update_program(
        conn,
        program_id=program_id,
        tenant_id=tenant_id,
        program=_validated(cmd, default_code_length),
    )
    await events.publish(conn, events.program_updated(program), tenant_id)
    return program

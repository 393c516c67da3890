"""The program.* events: one builder per type, from the stored program, so every path that
emits one builds it the same way."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import asyncpg

from link_service.events import EVENTS
from link_service.programs.domain import stored_code_format
from referral_events.contracts import link as ev

_State = TypeVar("_State", ev.ProgramCreated, ev.ProgramUpdated)


def _program_state(kind: type[_State], program: asyncpg.Record) -> _State:
    """The program's whole state: a consumer's copy never needs an earlier event."""
    return kind(
        program_id=program["id"],
        name=program["name"],
        status=program["status"],
        landing_url=program["landing_url"],
        allowed_domains=list(program["allowed_domains"]),
        starts_at=program["starts_at"],
        ends_at=program["ends_at"],
        fallback_url=program["fallback_url"],
        default_locale=program["default_locale"],
        code_format=ev.CodeFormat(**dataclasses.asdict(stored_code_format(program))),
        vanity_allowed=program["vanity_allowed"],
        share_templates=dict(program["share_templates"]),
        version=program["version"],
    )


def program_created(program: asyncpg.Record) -> ev.ProgramCreated:
    return _program_state(ev.ProgramCreated, program)


def program_updated(program: asyncpg.Record) -> ev.ProgramUpdated:
    return _program_state(ev.ProgramUpdated, program)


async def publish(
    conn: asyncpg.Connection, payload: ev.ProgramCreated | ev.ProgramUpdated, tenant_id: str
) -> None:
    # Keyed by program: a consumer sees each program's states in order.
    await EVENTS.emit(conn, payload, tenant_id=tenant_id, key=payload.program_id)

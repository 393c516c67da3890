"""Use cases of a program's audience: its attribute definitions, segments and eligibility, and
segment previews. They take the edge's connection and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from link_service.audience import events, repository
from link_service.audience.domain import Audience
from link_service.programs.handlers import get_program
from servicekit import audience
from servicekit.problems import NotFound


async def audience_of(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> Audience:
    """The program's audience (the built-in attributes only, when it set none)."""
    return Audience.of(await repository.get_audience(conn, tenant_id, program_id))


async def put_audience(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, new: Audience
) -> Audience:
    """Replaces the audience; the same one again changes nothing and emits nothing."""
    await get_program(conn, tenant_id, program_id, for_update=True)
    current = await audience_of(conn, tenant_id, program_id)
    if current.version and current.to_json() == new.to_json():
        return current
    stored = Audience.of(await repository.put_audience(conn, tenant_id, program_id, new.to_json()))
    await events.publish(conn, events.audience_changed(program_id, stored), tenant_id)
    return stored


async def get_audience(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> Audience:
    await get_program(conn, tenant_id, program_id)
    return await audience_of(conn, tenant_id, program_id)


@dataclass(frozen=True)
class Preview:
    matching: int
    total: int


async def preview(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    *,
    condition: Any = None,
    segment: str | None = None,
) -> Preview:
    """How many of the program's advocates match a condition (or a named segment) now, by the
    same rule rewards and eligibility apply."""
    aud = await get_audience(conn, tenant_id, program_id)
    if segment is not None:
        found = next((s for s in aud.segments if s.name == segment), None)
        if found is None:
            raise NotFound(f"no segment '{segment}'", field="segment")
        cond = found.condition
    else:
        cond = audience.condition(condition, aud.definitions, "/condition")
    matching = total = 0
    async for attrs in repository.program_attributes(conn, tenant_id, program_id):
        total += 1
        matching += cond.matches(attrs)
    return Preview(matching, total)

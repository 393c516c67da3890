"""What the service keeps of link-service and per program: the copies of programs, advocates,
codes and clicks (from link.events and link.clicks), and each program's attribution settings and
fraud policy (through the API). A code or click arriving decides the conversions that waited for
it. Every function takes the caller's connection (the edge's transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from attribution_service.conversions import fraud
from attribution_service.conversions import pending as conversions
from attribution_service.programs import repository
from attribution_service.programs.domain import DEFAULT_SETTINGS, ProgramSettings
from referral_events import CloudEvent
from referral_events.contracts import link as ev
from referral_events.inbox import Batched
from servicekit.problems import NotFound

# --- event handlers: keep the local copies of link-service's facts -------------------------


async def on_program(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    await repository.upsert_program(conn, event.tenantid, payload)


async def on_audience_changed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramAudienceChanged
) -> None:
    await repository.set_friend_countries(conn, event.tenantid, payload)


async def on_advocate(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ev.AdvocateEnrolled | ev.AdvocateUpdated,
) -> None:
    await repository.upsert_advocate(
        conn, event.tenantid, payload, email_norm=fraud.normalize_email(payload.email)
    )
    if payload.code:
        await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)


async def on_advocate_blocked(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.AdvocateBlocked | ev.AdvocateUnblocked
) -> None:
    blocked = isinstance(payload, ev.AdvocateBlocked)
    await repository.set_advocate_blocked(conn, payload.advocate_id, blocked, payload.version)
    if not blocked:
        await repository.reset_auto_block(conn, payload.advocate_id)


async def on_advocate_sighted(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.AdvocateSighted
) -> None:
    """Kept for the self-referral check (the advocate's network and device around a click)."""
    await repository.insert_sighting(conn, event.tenantid, payload)


async def _code(
    conn: asyncpg.Connection,
    tenant_id: str,
    code: str,
    program_id: str,
    advocate_id: str,
    alias_of: str | None = None,
) -> None:
    key = code.upper()
    async with conversions.evidence_arriving(conn, [(tenant_id, None, key)]):
        await repository.upsert_code(
            conn,
            tenant_id=tenant_id,
            code=code,
            program_id=program_id,
            advocate_id=advocate_id,
            alias_of=alias_of,
        )


async def on_code_created(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.CodeCreated
) -> None:
    await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)


async def on_code_changed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.CodeChanged
) -> None:
    # The previous code stays an alias of the same advocate (it keeps attributing); recorded
    # too in case its own code.created was never seen here.
    await _code(conn, event.tenantid, payload.code, payload.program_id, payload.advocate_id)
    await _code(
        conn,
        event.tenantid,
        payload.previous_code,
        payload.program_id,
        payload.advocate_id,
        alias_of=payload.code.upper(),
    )


async def _clicks_arrived(
    conn: asyncpg.Connection, clicks: Sequence[tuple[CloudEvent, ev.LinkClicked]]
) -> None:
    pieces = [(event.tenantid, p.click_id, None) for event, p in clicks]
    async with conversions.evidence_arriving(conn, pieces):
        await repository.insert_clicks(conn, [(event.tenantid, p) for event, p in clicks])


# Clicks arrive by the thousand: a consumed run of them is recorded set-wise, in one transaction
# (one statement each for the inbox, the locks, the copies and the pending conversions' lookup).
on_link_clicked = Batched(_clicks_arrived)


# --- attribution settings ------------------------------------------------------------------


def _no_program(program_id: str) -> NotFound:
    return NotFound(f"no program '{program_id}'", field="/program_id")


async def _own_program(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, *, known: bool = False
) -> None:
    """Another workspace's program: 404. `known`: also a program this service has neither
    heard of (link.events) nor been given settings for (a read; a write is accepted for a
    program whose event has not arrived yet, and applies when it does: README, "Programs
    learnt by events")."""
    program = await repository.get_program(conn, program_id)
    stored = await repository.get_settings(conn, program_id)
    owner = program["tenant_id"] if program else stored["tenant_id"] if stored else None
    if (owner is not None and owner != tenant_id) or (known and owner is None):
        raise _no_program(program_id)


async def get_settings(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> tuple[ProgramSettings, datetime | None]:
    await _own_program(conn, tenant_id, program_id, known=True)
    row = await repository.get_settings(conn, program_id)
    if row is None:
        return DEFAULT_SETTINGS, None
    return ProgramSettings.model_validate(row["settings"]), row["updated_at"]


async def put_settings(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, settings: ProgramSettings
) -> datetime:
    await _own_program(conn, tenant_id, program_id)
    row = await repository.put_settings(
        conn, program_id, tenant_id, settings.model_dump(mode="json")
    )
    if row is None:
        raise _no_program(program_id)
    updated: datetime = row["updated_at"]
    return updated

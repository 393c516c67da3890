"""Use cases of link-service. Each takes the caller's connection (the edge's transaction),
changes state through the repository and emits the implied events through the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from link_service import domain, repository
from link_service.schemas import AdvocateIn, ProgramIn
from referral_events import topics
from referral_events.contracts import link as ev
from referral_events.outbox import emit
from servicekit.ids import new_id
from servicekit.problems import Conflict, NotFound

SOURCE = "/services/link-service"
CODE_ATTEMPTS = 8


async def create_program(
    conn: asyncpg.Connection, tenant_id: str, cmd: ProgramIn
) -> asyncpg.Record:
    domains = domain.normalize_domains(cmd.landing_url, cmd.allowed_domains)
    program = await repository.insert_program(
        conn,
        program_id=new_id("prg"),
        tenant_id=tenant_id,
        name=cmd.name,
        status=cmd.status,
        landing_url=cmd.landing_url,
        allowed_domains=domains,
    )
    await emit(
        conn,
        ev.ProgramCreated(
            program_id=program["id"],
            name=program["name"],
            status=program["status"],
            landing_url=program["landing_url"],
            allowed_domains=list(program["allowed_domains"]),
        ),
        source=SOURCE,
        tenant_id=tenant_id,
        topic=topics.LINK_EVENTS,
        key=program["id"],
    )
    return program


async def get_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> asyncpg.Record:
    program = await repository.get_program(conn, tenant_id, program_id)
    if program is None:
        raise NotFound(f"no program '{program_id}'", field="program_id")
    return program


@dataclass(frozen=True)
class Enrollment:
    advocate: asyncpg.Record
    code: str
    created: bool


async def enroll_advocate(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, cmd: AdvocateIn, code_length: int
) -> Enrollment:
    """Enrolling the same customer again returns the existing advocate and code."""
    await get_program(conn, tenant_id, program_id)
    advocate = await repository.insert_advocate(
        conn,
        advocate_id=new_id("adv"),
        tenant_id=tenant_id,
        program_id=program_id,
        customer_id=cmd.customer_id,
        email=cmd.email,
        name=cmd.name,
        locale=cmd.locale,
        marketing_consent=cmd.marketing_consent,
    )
    if advocate is None:
        existing = await repository.get_advocate_by_customer(conn, program_id, cmd.customer_id)
        assert existing is not None
        return Enrollment(existing, await repository.primary_code(conn, existing["id"]), False)

    code = await _issue_random_code(conn, tenant_id, program_id, advocate["id"], code_length)
    await emit(
        conn,
        ev.AdvocateEnrolled(
            advocate_id=advocate["id"],
            program_id=program_id,
            customer_id=cmd.customer_id,
            email=cmd.email,
            name=cmd.name,
            locale=cmd.locale,
            marketing_consent=cmd.marketing_consent,
        ),
        source=SOURCE,
        tenant_id=tenant_id,
        topic=topics.LINK_EVENTS,
        key=advocate["id"],
    )
    await emit(
        conn,
        ev.CodeCreated(code=code, advocate_id=advocate["id"], program_id=program_id),
        source=SOURCE,
        tenant_id=tenant_id,
        topic=topics.LINK_EVENTS,
        key=advocate["id"],
    )
    return Enrollment(advocate, code, True)


async def _issue_random_code(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, advocate_id: str, length: int
) -> str:
    # The primary key decides uniqueness; a collision just draws again.
    for _ in range(CODE_ATTEMPTS):
        code = domain.generate_code(length)
        if await repository.insert_code(
            conn,
            code=code,
            code_key=domain.code_key(code),
            tenant_id=tenant_id,
            program_id=program_id,
            advocate_id=advocate_id,
            kind="random",
        ):
            return code
    raise Conflict("could not draw a free referral code; the code space is nearly full")


async def get_advocate(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str
) -> tuple[asyncpg.Record, str]:
    advocate = await repository.get_advocate(conn, tenant_id, advocate_id)
    if advocate is None:
        raise NotFound(f"no advocate '{advocate_id}'", field="advocate_id")
    return advocate, await repository.primary_code(conn, advocate_id)


async def lookup_code(conn: asyncpg.Connection, tenant_id: str, code: str) -> asyncpg.Record:
    resolved = await repository.resolve_code(conn, domain.code_key(code))
    if resolved is None or resolved["tenant_id"] != tenant_id:
        raise NotFound(f"no referral code '{code}'", field="code")
    return resolved


@dataclass(frozen=True)
class ClickContext:
    channel: str | None
    user_agent: str | None
    referrer: str | None
    client_ip: str | None


async def record_click(
    conn: asyncpg.Connection, code: str, ctx: ClickContext, ip_key: str
) -> str | None:
    """Returns the landing URL to redirect to, or None for an unknown code. The click row and
    its event commit together, before the redirect is answered, so a crash loses neither."""
    resolved = await repository.resolve_code(conn, domain.code_key(code))
    if resolved is None:
        return None
    click_id = new_id("clk")
    clicked_at = datetime.now(UTC)
    counts = domain.can_earn(resolved["program_status"], resolved["advocate_blocked"])
    fields = dict(
        click_id=click_id,
        code=resolved["code"],
        program_id=resolved["program_id"],
        advocate_id=resolved["advocate_id"],
        channel=ctx.channel,
        clicked_at=clicked_at,
        user_agent_family=None,
        device_class=None,
        referrer_host=domain.referrer_host(ctx.referrer),
        ip_hash=domain.ip_hash(ip_key, ctx.client_ip),
        is_bot=False,
        counts=counts,
    )
    await repository.insert_click(conn, tenant_id=resolved["tenant_id"], **fields)
    await emit(
        conn,
        ev.LinkClicked(**fields),
        source=SOURCE,
        tenant_id=resolved["tenant_id"],
        topic=topics.LINK_CLICKS,
        key=resolved["code"],
        event_id=click_id,
    )
    return domain.landing_url_for_click(resolved["landing_url"], resolved["code"], click_id)

"""Programs and advocates heard of: kept from link.events, and the checks routes make with them.
They take the edge's connection and never commit."""

from __future__ import annotations

import asyncpg

from referral_events import CloudEvent
from referral_events.contracts import link as ev
from reward_service.programs import repository
from servicekit.problems import Conflict, NotFound

# What a write under a program not heard of yet tells the caller to wait (seconds): the
# program's event usually arrives ~100 ms after link-service answered its creation.
RETRY_AFTER_SECONDS = 1


async def on_program(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramCreated | ev.ProgramUpdated
) -> None:
    await repository.add_program(conn, event.tenantid, payload.program_id)


async def on_advocate(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ev.AdvocateEnrolled | ev.AdvocateUpdated,
) -> None:
    # An advocate's program exists too (its event may be later on another partition).
    await repository.add_program(conn, event.tenantid, payload.program_id)
    await repository.add_advocate(conn, event.tenantid, payload.advocate_id, payload.program_id)


async def program_known(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> bool:
    return await repository.program_known(conn, tenant_id, program_id)


async def require_program(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    """A read under a program: 404 unless heard of in this workspace."""
    if not await repository.program_known(conn, tenant_id, program_id):
        raise NotFound(f"no program '{program_id}'", field="/program_id")


async def require_holder(conn: asyncpg.Connection, tenant_id: str, holder_id: str) -> None:
    """A read under an account holder: 404 unless an advocate heard of or a holder of an
    account in this workspace."""
    if not await repository.holder_known(conn, tenant_id, holder_id):
        raise NotFound(f"no account holder '{holder_id}'", field="/holder_id")


def not_heard_of(program_id: str) -> Conflict:
    """A write under a program this service has not heard of (yet): 409 with Retry-After. The
    program may have been created a moment ago (its event is on its way), or not exist in this
    workspace: either way nothing is written."""
    exc = Conflict(
        f"program '{program_id}' is not known to reward-service (yet): a program created a"
        f" moment ago reaches it through link.events; retry after {RETRY_AFTER_SECONDS} s",
        field="/program_id",
    )
    exc.headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return exc

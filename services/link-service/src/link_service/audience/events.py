"""program.audience_changed: one builder, from the stored audience."""

from __future__ import annotations

import asyncpg

from link_service.audience.domain import Audience
from link_service.events import EVENTS
from referral_events.contracts import link as ev


def audience_changed(program_id: str, audience: Audience) -> ev.ProgramAudienceChanged:
    doc = audience.to_json()
    return ev.ProgramAudienceChanged(
        program_id=program_id,
        attributes=doc["attributes"],
        segments=doc["segments"],
        eligibility=doc["eligibility"],
        version=audience.version,
    )


async def publish(
    conn: asyncpg.Connection, payload: ev.ProgramAudienceChanged, tenant_id: str
) -> None:
    # Keyed by program, as the program's other events.
    await EVENTS.emit(conn, payload, tenant_id=tenant_id, key=payload.program_id)

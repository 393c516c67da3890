"""The advocate.* and code.* events: one builder per type, from the stored advocate, so every
path that emits one (a single enrollment, a bulk job's chunk, ...) builds it the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from link_service.domain import Links
from link_service.events import EVENTS
from referral_events.contracts import link as ev
from referral_events.outbox import OutboxRow, enqueue_rows

AdvocateEvent = (
    ev.AdvocateEnrolled
    | ev.AdvocateUpdated
    | ev.AdvocateBlocked
    | ev.AdvocateUnblocked
    | ev.CodeCreated
    | ev.CodeChanged
    | ev.AdvocateAttributesChanged
)
_State = TypeVar("_State", ev.AdvocateEnrolled, ev.AdvocateUpdated)


def _advocate_state(
    kind: type[_State], advocate: asyncpg.Record, code: str, links: Links
) -> _State:
    """The advocate's whole state: a consumer's copy never needs an earlier event."""
    return kind(
        advocate_id=advocate["id"],
        program_id=advocate["program_id"],
        customer_id=advocate["customer_id"],
        email=advocate["email"],
        name=advocate["name"],
        locale=advocate["locale"],
        marketing_consent=advocate["marketing_consent"],
        blocked=advocate["blocked"],
        code=code,
        link_url=links.link(code),
        version=advocate["version"],
        referred_by=advocate["referred_by"],
    )


def advocate_enrolled(advocate: asyncpg.Record, code: str, links: Links) -> ev.AdvocateEnrolled:
    return _advocate_state(ev.AdvocateEnrolled, advocate, code, links)


def advocate_updated(advocate: asyncpg.Record, code: str, links: Links) -> ev.AdvocateUpdated:
    return _advocate_state(ev.AdvocateUpdated, advocate, code, links)


def advocate_blocked(
    advocate: asyncpg.Record, reason: str | None, at: datetime
) -> ev.AdvocateBlocked:
    return ev.AdvocateBlocked(
        advocate_id=advocate["id"],
        program_id=advocate["program_id"],
        reason=reason,
        blocked_at=at,
        version=advocate["version"],
    )


def advocate_unblocked(advocate: asyncpg.Record, at: datetime) -> ev.AdvocateUnblocked:
    return ev.AdvocateUnblocked(
        advocate_id=advocate["id"],
        program_id=advocate["program_id"],
        unblocked_at=at,
        version=advocate["version"],
    )


def code_created(advocate: asyncpg.Record, code: str, links: Links) -> ev.CodeCreated:
    """An enrolled advocate's first code (random; later ones are code.changed)."""
    return ev.CodeCreated(
        code=code,
        advocate_id=advocate["id"],
        program_id=advocate["program_id"],
        kind="random",
        link_url=links.link(code),
    )


def code_changed(
    advocate: asyncpg.Record, code: str, previous: str, links: Links, at: datetime
) -> ev.CodeChanged:
    return ev.CodeChanged(
        code=code,
        previous_code=previous,
        advocate_id=advocate["id"],
        program_id=advocate["program_id"],
        kind="vanity",
        link_url=links.link(code),
        changed_at=at,
    )


def attributes_changed(
    advocate_id: str, program_id: str, change: int, changes: dict[str, Any], at: datetime
) -> ev.AdvocateAttributesChanged:
    return ev.AdvocateAttributesChanged(
        advocate_id=advocate_id,
        program_id=program_id,
        change=change,
        changes=changes,
        effective_at=at,
    )


def outbox_row(payload: AdvocateEvent, tenant_id: str) -> OutboxRow:
    # Keyed by advocate: a consumer sees each advocate's events, codes included, in order.
    return EVENTS.row(payload, tenant_id=tenant_id, key=payload.advocate_id)


async def publish(conn: asyncpg.Connection, payload: AdvocateEvent, tenant_id: str) -> None:
    await enqueue_rows(conn, [outbox_row(payload, tenant_id)])

"""Use cases of the dev clock. They take the edge's connection and never commit."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from reward_service.clock import ControllableClock
from reward_service.devclock import repository
from reward_service.earning import handlers as earning
from servicekit.auth import Principal

RECENT_MOVES = 20


async def advance(
    conn: asyncpg.Connection,
    clock: ControllableClock,
    by: timedelta,
    who: Principal,
    batch_size: int,
) -> int:
    """Releases, now, every reward whose hold has ended by the clock's time moved forward by
    `by` (through the releaser's own use case, batch after batch), so the caller sees them
    available when the answer comes, and records the move with the key that made it. Returns
    the number released. The edge moves the clock itself once this has committed."""
    now = clock() + by
    released = 0
    while True:
        count = await earning.release_due_rewards(conn, now, batch_size)
        released += count
        if count < batch_size:
            break
    await repository.record_move(
        conn,
        tenant_id=who.tenant_id,
        key_id=who.key_id,
        advance_ms=round(by.total_seconds() * 1000),
        offset_ms=round((clock.offset + by).total_seconds() * 1000),
        released=released,
    )
    return released


async def recent_moves(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await repository.recent_moves(conn, RECENT_MOVES)

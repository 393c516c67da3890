"""Routes of the dev clock (DEV_CLOCK_CONTROL; ENVIRONMENT=dev only). The clock is the whole
process's, every workspace's: only a platform key (API_KEYS) with the `admin` scope moves it."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from fastapi import APIRouter, Request

from reward_service.clock import ControllableClock
from reward_service.config import Settings
from reward_service.devclock import handlers
from reward_service.devclock.schemas import AdvanceIn, ClockOut, MoveOut
from reward_service.web import Auth, Rt
from servicekit.auth import requires
from servicekit.problems import Forbidden, NotFound

router = APIRouter(dependencies=[requires("admin")], tags=["dev"])


def _clock(request: Request) -> ControllableClock:
    clock = request.app.state.clock
    if not isinstance(clock, ControllableClock):
        raise NotFound("this service's clock cannot be moved (DEV_CLOCK_CONTROL, dev only)")
    return clock


def _out(clock: ControllableClock, moves: list[MoveOut], released: int | None = None) -> ClockOut:
    return ClockOut(
        now=clock(), offset_seconds=clock.offset.total_seconds(), released=released, moves=moves
    )


def _moves(rows: list[asyncpg.Record]) -> list[MoveOut]:
    return [
        MoveOut(
            key_id=r["key_id"],
            tenant_id=r["tenant_id"],
            advance_seconds=r["advance_ms"] / 1000,
            offset_seconds=r["offset_ms"] / 1000,
            released=r["released"],
            moved_at=r["moved_at"],
        )
        for r in rows
    ]


@router.get("/v1/dev/clock", response_model=ClockOut)
async def get_clock(request: Request, who: Auth, rt: Rt) -> ClockOut:
    clock = _clock(request)
    async with rt.transaction() as conn:
        rows = await handlers.recent_moves(conn)
    return _out(clock, _moves(rows))


@router.post("/v1/dev/clock/advance", response_model=ClockOut)
async def advance_clock(body: AdvanceIn, request: Request, who: Auth, rt: Rt) -> ClockOut:
    """Moves the clock forward by `advance_seconds` and releases the holds that end by then."""
    clock = _clock(request)
    if not who.platform:
        raise Forbidden("only a platform key (API_KEYS) moves the clock: it is every workspace's")
    settings = rt.settings
    assert isinstance(settings, Settings)
    by = timedelta(seconds=body.advance_seconds)
    async with rt.transaction() as conn:
        released = await handlers.advance(conn, clock, by, who, settings.release_batch_size)
        rows = await handlers.recent_moves(conn)
    clock.advance(by)  # once the releases and the record have committed
    return _out(clock, _moves(rows), released)

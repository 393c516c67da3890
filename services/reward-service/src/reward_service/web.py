"""What every feature's HTTP routes share: the caller, the runtime, the app's clock, the shape
of an id in a path, and the wait of a write for a program's event."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request

from reward_service.clock import Clock
from reward_service.config import Settings
from reward_service.programs import handlers as programs
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime


def now(request: Request) -> datetime:
    """FastAPI dependency: the app's clock (injected, so tests move time instead of sleeping)."""
    clock: Clock = request.app.state.clock
    return clock()


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]
Now = Annotated[datetime, Depends(now)]
# A program, holder, pool, batch or line id in a path.
PathId = Annotated[str, Path(min_length=1, max_length=200)]


async def program_heard_of(rt: Runtime, tenant_id: str, program_id: str) -> None:
    """A write under a program waits up to PROGRAM_EVENT_WAIT_SECONDS for the program's event
    (a program created a moment ago reaches this service ~100 ms later, so writing its rule
    straight after creating it works), then answers 409 with Retry-After. Each look is its own
    short transaction: nothing is held while waiting."""
    settings = rt.settings
    assert isinstance(settings, Settings)
    deadline = time.monotonic() + settings.program_event_wait_seconds
    pause = 0.05
    while True:
        async with rt.transaction() as conn:
            if await programs.program_known(conn, tenant_id, program_id):
                return
        if time.monotonic() + pause > deadline:
            raise programs.not_heard_of(program_id)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)

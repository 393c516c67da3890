"""What every feature's HTTP routes share: the caller, the runtime, the app's clock and the shape
of an id in a path."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request

from reward_service.clock import Clock
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

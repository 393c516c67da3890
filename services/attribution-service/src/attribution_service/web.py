"""What every feature's routes depend on: the caller's principal, the runtime (and the service's
settings in it), and the Idempotency-Key header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from attribution_service.config import Settings
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime


# servicekit's `runtime` is a plain function, which FastAPI runs in its thread pool: two thread
# hand-offs per request, a large share of a conversion's CPU on a busy machine. It is a dict
# lookup, so it runs on the event loop here (`principal` is async already).
async def _runtime(request: Request) -> Runtime:
    return runtime(request)


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(_runtime)]
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200)]


def settings(rt: Runtime) -> Settings:
    s = rt.settings
    assert isinstance(s, Settings)
    return s

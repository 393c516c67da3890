"""What the HTTP routes of every area share: who is calling, the runtime, the service's
settings and public links, and the app's LinkState (the redirect's cache, the workers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from link_service.config import Settings
from link_service.domain import Links
from link_service.redirect.state import LinkState
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime


# servicekit's `runtime` is a plain function, which FastAPI runs in its thread pool: two thread
# hand-offs per request for a dict lookup (as attribution_service.web says). Here it runs on the
# event loop.
async def _runtime(request: Request) -> Runtime:
    return runtime(request)


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(_runtime)]


def settings(rt: Runtime) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


def links(rt: Runtime) -> Links:
    return Links(settings(rt).public_base_url)


def link_state(request: Request) -> LinkState:
    state: LinkState = request.app.state.links
    return state

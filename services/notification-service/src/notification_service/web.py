"""FastAPI dependencies the routes of both features share: the caller, the runtime, the settings
and the app's clock."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from notification_service.clock import Clock
from notification_service.config import Settings
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime


def settings_of(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


def clock_of(request: Request) -> Clock:
    """The app's clock (injected by tests): what is due "now" is due at the time the workers
    compare against."""
    clock: Clock = request.app.state.clock
    return clock


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]
Cfg = Annotated[Settings, Depends(settings_of)]
AppClock = Annotated[Clock, Depends(clock_of)]

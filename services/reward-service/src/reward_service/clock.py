"""The service's one notion of "now": injected (main.create_app, build_spec) so tests move time
instead of sleeping; every timestamp it hands out is UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC (the platform's events are all UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ControllableClock:
    """Dev and tests only (DEV_CLOCK_CONTROL, refused outside ENVIRONMENT=dev): real time plus
    an offset that only moves forward (`POST /v1/dev/clock/advance`), so a hold of days can
    end in a local run. It is the service's one clock: routes, consumers and the releaser all
    read it. Per process, and back to real time at a restart (the moves stay on record)."""

    def __init__(self, base: Clock = utc_now) -> None:
        self._base = base
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return self._base() + self.offset

    def advance(self, by: timedelta) -> None:
        if by <= timedelta(0):
            raise ValueError("the clock only moves forward")
        self.offset += by

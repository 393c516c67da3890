"""Background work owned by attribution-service: deciding conversions whose evidence never
arrived within the grace period, and forgetting webhook receipts older than any replay window.
Driven by Postgres state, so a restart resumes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from attribution_service.commerce import handlers as commerce
from attribution_service.conversions import pending
from servicekit.runtime import Runtime


class PendingSweeper:
    def __init__(
        self,
        rt: Runtime,
        grace_seconds: int,
        interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rt = rt
        self._grace = timedelta(seconds=grace_seconds)
        self._interval = interval
        self._clock = clock
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.sweep_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def sweep_once(self) -> int:
        async with self._rt.transaction() as conn:
            decided = await pending.decide_overdue(conn, self._grace, self._clock())
        async with self._rt.transaction() as conn:
            await commerce.prune_receipts(conn, self._clock())
        return decided

    async def stop(self) -> None:
        self._stop.set()

"""Background work owned by attribution-service: deciding conversions whose evidence never
arrived within the grace period, forgetting webhook receipts older than any replay window, and
folding the service's own events into the analytics read models.
Driven by Postgres state, so a restart resumes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from attribution_service.analytics import handlers as analytics
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


class AnalyticsFolder:
    """Folds this service's own events into the analytics read models (analytics.handlers.
    fold_outboxed), a batch per transaction; sleeps `interval` when none are waiting."""

    def __init__(self, rt: Runtime, interval: float = 0.5, batch: int = 500) -> None:
        self._rt = rt
        self._interval = interval
        self._batch = batch
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            if await self.fold_once() < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._interval)

    async def fold_once(self) -> int:
        async with self._rt.transaction() as conn:
            return await analytics.fold_outboxed(conn, self._batch)

    async def stop(self) -> None:
        self._stop.set()

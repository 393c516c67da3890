"""Background work owned by reward-service: releasing rewards whose holding period has ended.
The schedule is the rewards table itself (not in-memory timers), so releases survive restarts
and several replicas can share the work."""

from __future__ import annotations

import asyncio
import contextlib

from reward_service.clock import Clock, utc_now
from reward_service.earning import handlers
from servicekit.runtime import Runtime


class RewardReleaser:
    def __init__(
        self, rt: Runtime, *, interval: float, batch_size: int, clock: Clock = utc_now
    ) -> None:
        self._rt = rt
        self._interval = interval
        self._batch_size = batch_size
        self._clock = clock
        self._stop = asyncio.Event()
        self.released = 0

    async def run(self) -> None:
        while not self._stop.is_set():
            released = await self.release_once()
            if released == self._batch_size:
                continue  # more may be due right now; don't wait a whole interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def release_once(self) -> int:
        """One batch in one transaction: transfers, state changes and events commit together."""
        async with self._rt.transaction() as conn:
            released = await handlers.release_due_rewards(conn, self._clock(), self._batch_size)
        self.released += released
        return released

    async def stop(self) -> None:
        self._stop.set()

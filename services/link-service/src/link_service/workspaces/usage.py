"""last_used_at of workspace keys, kept cheap: the authenticator notes each use in memory and
this worker writes what it noted at most once a minute, one statement for all keys. Only
link-service records use (the owner alone): the other services' requests are not reported."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from link_service.workspaces import repository
from servicekit.runtime import Runtime

FLUSH_INTERVAL_SECONDS = 60.0


class KeyUsage:
    def __init__(self, rt: Runtime, interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._rt = rt
        self._interval = interval
        self._used: dict[str, datetime] = {}
        self._stop = asyncio.Event()

    def note(self, key_id: str) -> None:
        self._used[key_id] = datetime.now(UTC)

    async def flush(self) -> None:
        used, self._used = self._used, {}
        if used:
            async with self._rt.transaction() as conn:
                await repository.record_use(conn, used)

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.flush()

    async def stop(self) -> None:
        self._stop.set()

"""Retention: raw rows holding personal data (clicks, mail and webhook bodies) are kept only as
long as the service needs them, then rolled into aggregates or cleared, by a background worker
in bounded batches (docs/operations.md, "Retention").

Each service names its steps: a table (the metric's label) and a function that prunes at most
`limit` rows older than its retention in the caller's transaction and returns how many. The
worker runs every step until a batch comes back short, one transaction per batch, so a large
backlog never holds one long transaction or lock; rows are claimed `FOR UPDATE SKIP LOCKED` by
the steps, so replicas share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter

from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

PRUNED = Counter(
    "referral_retention_pruned_rows_total",
    "Rows past their retention pruned (deleted after being rolled into aggregates, or their "
    "bodies cleared), by table.",
    ["table"],
)

Prune = Callable[[asyncpg.Connection, datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class RetentionStep:
    """`prune(conn, now, limit)` prunes at most `limit` rows of `table` past their retention."""

    table: str
    prune: Prune


class Pruner:
    """Background worker running a service's retention steps every `interval` seconds."""

    def __init__(
        self,
        rt: Runtime,
        steps: Sequence[RetentionStep],
        *,
        batch: int,
        interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rt = rt
        self._steps = list(steps)
        self._batch = batch
        self._interval = interval
        self._clock = clock
        self._stop = asyncio.Event()
        for step in self._steps:
            PRUNED.labels(table=step.table)  # the series exist from the start, at 0

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # retried next round; a failing step must not stop the others
                log.exception("retention pruning failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def run_once(self) -> dict[str, int]:
        """Prunes everything past its retention now; returns rows pruned by table."""
        now = self._clock()
        done: dict[str, int] = {}
        for step in self._steps:
            done[step.table] = 0
            while not self._stop.is_set():
                async with self._rt.transaction() as conn:
                    n = await step.prune(conn, now, self._batch)
                PRUNED.labels(table=step.table).inc(n)
                done[step.table] += n
                if n < self._batch:
                    break
        return done

    async def stop(self) -> None:
        self._stop.set()

"""Background loops of the redirect: the group-commit click writer and the cache invalidator that
tails link.events. (The bulk-enrollment worker is enrollment.worker.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from prometheus_client import Counter, Histogram

from link_service.config import Settings
from link_service.redirect.cache import CodeCache
from link_service.redirect.repository import ClickRow, insert_clicks_with_events
from referral_events import topics
from referral_events.kafka import make_consumer
from referral_events.outbox import OutboxRow
from servicekit.db import DB_ERRORS
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)


class ClickWriter:
    """Group commit: every redirect enqueues its click; a few writer loops each take whatever
    has queued up (at most `batch_max`) and insert clicks and outbox rows in one statement.
    While one batch commits the next one fills, so under load a transaction carries many
    clicks and at low load a click waits only for its own commit. `record` returns once the
    click's batch committed (True) or failed (False): the redirect sends its 302 after that."""

    def __init__(self, rt: Runtime, settings: Settings, registry: Any = None) -> None:
        self._rt = rt
        self._batch_max = settings.click_batch_max
        self._writers = settings.click_writers
        self._timeout = settings.click_commit_timeout_seconds
        self._queue: deque[tuple[ClickRow, OutboxRow, asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        # The redirect's own latency is mostly this commit: worth watching in production.
        self.commit_seconds = Histogram(
            "link_click_commit_seconds",
            "Duration of one group commit of clicks and their events.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.committed = Counter(
            "link_clicks_committed",
            "Clicks committed (each with its link.clicked outbox row).",
            registry=registry,
        )

    async def record(self, click: ClickRow, event: OutboxRow) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append((click, event, future))
        self._wake.set()
        # One timer handle instead of wait_for + shield (a task and two futures per redirect):
        # on timeout the future answers False; the batch may still commit later, and then
        # its click is recorded but was answered without click id.
        timer = loop.call_later(self._timeout, _give_up, future, click[0], self._timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop() for _ in range(self._writers)))

    async def stop(self) -> None:
        """Write what is queued, then leave."""
        self._stopping = True
        self._wake.set()

    async def _loop(self) -> None:
        # Each writer keeps one pooled connection for as long as it works: returning it to
        # the pool after every batch would cost a session reset (a round trip) per commit.
        conn: asyncpg.Connection | None = None
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch: list[tuple[ClickRow, OutboxRow, asyncio.Future[bool]]] = []
                while self._queue and len(batch) < self._batch_max:
                    batch.append(self._queue.popleft())
                if self._queue:
                    self._wake.set()  # let another writer start on the rest meanwhile
                ok, conn = await self._write(batch, conn)
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(ok)
        finally:
            if conn is not None:
                await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        with contextlib.suppress(*DB_ERRORS):
            await self._rt.pool.release(conn)

    async def _write(
        self,
        batch: list[tuple[ClickRow, OutboxRow, asyncio.Future[bool]]],
        conn: asyncpg.Connection | None,
    ) -> tuple[bool, asyncpg.Connection | None]:
        """Writes the batch; returns whether it committed and the connection to keep (None
        after a failure: a connection that failed is handed back, a fresh one taken next)."""
        clicks = [c for c, _, _ in batch]
        events = [e for _, e, _ in batch]
        for attempt in range(3):
            try:
                if conn is None:
                    conn = await self._rt.pool.acquire()
                # The relay leading in this process is woken directly; only one leading in
                # another replica needs the NOTIFY (which serialises notifying commits).
                relay = self._rt.relay
                local = relay is not None and relay.is_leader
                started = time.perf_counter()
                await insert_clicks_with_events(conn, clicks, events, notify=not local)
                self.commit_seconds.observe(time.perf_counter() - started)
                self.committed.inc(len(batch))
                if relay is not None:
                    relay.wake()
                return True, conn
            except asyncpg.UniqueViolationError:
                if attempt > 0:
                    # The earlier attempt committed after all (its answer got lost); the
                    # statement is atomic, so the whole batch is in.
                    return True, conn
                log.exception("click batch rejected")
                return False, conn
            except DB_ERRORS as exc:
                log.warning("click batch failed (attempt %d): %r", attempt + 1, exc)
                if conn is not None:
                    await self._release(conn)
                    conn = None
                await asyncio.sleep(0.05 * (attempt + 1))
        return False, conn


def _give_up(future: asyncio.Future[bool], click_id: str, timeout: float) -> None:
    if not future.done():
        log.error("click %s not committed in %ss; redirecting without it", click_id, timeout)
        future.set_result(False)


class CacheInvalidator:
    """Tails link.events WITHOUT a consumer group, so every replica sees every event (a shared
    group would hand each event to one replica only and leave the others' caches stale). It
    starts at the log end: the cache starts empty, and it is cleared once the reader is in
    position, so nothing read before can outlive an event it missed. No offsets are committed
    (nothing to resume: after a restart the cache is empty again). Should this reader stall,
    entries still expire after CODE_CACHE_TTL_SECONDS."""

    def __init__(self, rt: Runtime, cache: CodeCache) -> None:
        self._rt = rt
        self._cache = cache
        self._stopping = asyncio.Event()
        self.positioned = asyncio.Event()
        self.applied = 0

    async def run(self) -> None:
        s = self._rt.settings
        topic = s.kafka_topic_prefix + topics.LINK_EVENTS
        consumer = make_consumer(
            s.kafka_bootstrap_servers,
            None,
            security=s.kafka_security(),
            client_id=f"{self._rt.spec.name}-cache",
            auto_offset_reset="latest",
            max_poll_records=None,
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                if self._stopping.is_set():
                    return
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await asyncio.sleep(1)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self._cache.clear()
            self.positioned.set()
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self.apply(record.value)
        finally:
            self.positioned.clear()
            self._cache.clear()
            with contextlib.suppress(Exception):
                await consumer.stop()

    def apply(self, raw: bytes | None) -> None:
        if not raw:
            return
        try:
            event = json.loads(raw)
            kind, data = str(event["type"]), event["data"]
        except (ValueError, KeyError, TypeError):
            return
        cache = self._cache
        if kind.startswith("program."):
            cache.invalidate_program(data["program_id"])
        elif kind.startswith("advocate."):
            cache.invalidate_advocate(data["advocate_id"])
        elif kind.startswith("code."):
            cache.invalidate_codes([c for c in (data.get("code"), data.get("previous_code")) if c])
        self.applied += 1

    async def stop(self) -> None:
        self._stopping.set()

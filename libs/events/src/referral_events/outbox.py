"""Transactional outbox.

`enqueue` writes an event in the caller's transaction, beside the state change that implies it,
so either both are durable or neither is. `OutboxRelay` publishes rows in order with the
idempotent producer and marks them published. Publishing is at least once: a crash between the
broker's ack and the mark republishes, and the consumers' inbox drops the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from referral_events.envelope import CloudEvent, EventPayload, new_event
from referral_events.tracing import current_context_carrier, to_kafka_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("referral_events.outbox")

# Sends between two turns of the event loop (a send costs tens of microseconds of CPU).
_SENDS_PER_SLICE = 32


async def enqueue(conn: asyncpg.Connection, event: CloudEvent, *, topic: str, key: str) -> None:
    """Add `event` to the outbox in the transaction `conn` is in. Idempotent on event id."""
    # The producer span marks where the event was created; the consumer's span becomes its
    # child through the headers stored here, however long the row waits for the relay.
    with tracer.start_as_current_span(f"{topic} publish", kind=trace.SpanKind.PRODUCER) as span:
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.destination.name", topic)
        span.set_attribute("messaging.message.id", event.id)
        span.set_attribute("cloudevents.event_type", event.type)
        carrier = current_context_carrier()
    # The notification is delivered at commit (and folded with others of the same
    # transaction): it wakes the relay. One statement with the insert: one round trip.
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO outbox (event_id, topic, key, payload, headers)
            VALUES ($1, $2, $3, $4, $5::text::jsonb)
            ON CONFLICT (event_id) DO NOTHING
        )
        SELECT pg_notify(current_schema() || '_outbox', '')
        """,
        event.id,
        topic,
        key,
        event.to_json(),
        json.dumps(carrier),
    )


async def enqueue_many(
    conn: asyncpg.Connection, events: Sequence[tuple[CloudEvent, str, str]]
) -> None:
    """`enqueue` for a batch of (event, topic, key) in one statement, for set-based work (e.g.
    releasing thousands of rewards in one transaction). Same rows, same order, one wake-up."""
    if not events:
        return
    with tracer.start_as_current_span("outbox enqueue batch", kind=trace.SpanKind.PRODUCER) as span:
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.batch.message_count", len(events))
        carrier = json.dumps(current_context_carrier())
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO outbox (event_id, topic, key, payload, headers)
            SELECT e, t, k, p, $5::text::jsonb
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY
                 AS u(e, t, k, p, n)
            ORDER BY n
            ON CONFLICT (event_id) DO NOTHING
        )
        SELECT pg_notify(current_schema() || '_outbox', '')
        """,
        [e.id for e, _, _ in events],
        [t for _, t, _ in events],
        [k for _, _, k in events],
        [e.to_json() for e, _, _ in events],
        carrier,
    )


async def emit(
    conn: asyncpg.Connection,
    payload: EventPayload,
    *,
    source: str,
    tenant_id: str,
    topic: str,
    key: str,
    subject: str | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """Wrap `payload` in an envelope and enqueue it; the usual way a handler publishes."""
    event = new_event(
        payload, source=source, tenant_id=tenant_id, subject=subject or key, event_id=event_id
    )
    await enqueue(conn, event, topic=topic, key=key)
    return event


@dataclass
class OutboxStats:
    backlog: int
    oldest_age_seconds: float


async def outbox_stats(conn: asyncpg.Connection) -> OutboxStats:
    row = await conn.fetchrow(
        """
        SELECT count(*) AS backlog,
               coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
        FROM outbox WHERE published_at IS NULL
        """
    )
    assert row is not None
    return OutboxStats(backlog=int(row["backlog"]), oldest_age_seconds=float(row["age"]))


class OutboxRelay:
    """Publishes one schema's outbox. Several replicas may run it; a session advisory lock makes
    exactly one of them the publisher, which keeps per-key order without coordination."""

    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        producer: AIOKafkaProducer,
        topic_prefix: str = "",
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention_hours: int = 72,
        linger: float = 0.0,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._producer = producer
        self._topic_prefix = topic_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention_hours = retention_hours
        # Seconds to wait after a wake-up before reading: rows committed meanwhile go out in
        # the same SELECT, produce request and UPDATE. A service whose outbox is written many
        # times a second (link-service: a commit per few clicks) sets it; 0 reads at once.
        self.linger = linger
        self._wake = asyncio.Event()
        self._stopping = False
        self.is_leader = False
        # Acknowledged publishes by (topic, event type), read by the metrics exporter.
        self.published: Counter[tuple[str, str]] = Counter()

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._lead()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
                # Nothing was marked published, so the same rows go out again on the next lead.
                log.warning("outbox relay interrupted, retrying: %r", exc)
                self.is_leader = False
                await self._sleep(self._poll_interval)

    def wake(self) -> None:
        """Publish soon. A writer in the same process as the leading relay calls this after its
        commit instead of sending NOTIFY (see `is_leader`)."""
        self._wake.set()

    async def stop(self) -> None:
        """Ask the loop to publish what is committed now and then leave."""
        self._stopping = True
        self._wake.set()

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn,
            server_settings={
                "search_path": self._schema,
                "application_name": f"{self._schema}-outbox-relay",
                # Marking rows published need not wait for the WAL flush: should Postgres
                # lose the last marks in a crash, those rows are published again, which
                # at-least-once publishing allows anyway (the inbox drops repeats). It keeps
                # the relay's commits off the disk queue the services' own commits wait in.
                "synchronous_commit": "off",
                # Planned for each run, never from a cached generic plan: asyncpg prepares
                # these statements, and a generic plan made while the outbox was small (no
                # statistics yet) kept seq-scanning the growing table on every mark.
                "plan_cache_mode": "force_custom_plan",
            },
        )
        try:
            lock_id = zlib.crc32(f"outbox-relay:{self._schema}".encode())
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id):
                if self._stopping:
                    return
                await self._sleep(self._poll_interval * 5)
            self.is_leader = True
            await conn.add_listener(f"{self._schema}_outbox", lambda *_: self._wake.set())
            loop = asyncio.get_running_loop()
            next_prune = loop.time()
            while True:
                if loop.time() >= next_prune:
                    await self._prune(conn)
                    next_prune = loop.time() + 600
                published = await self.publish_batch(conn)
                if published == self._batch_size:
                    continue
                if self._stopping:
                    return
                if await self._sleep(self._poll_interval) and self.linger and not self._stopping:
                    await asyncio.sleep(self.linger)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close()

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            """
            SELECT seq, topic, key, payload, headers::text AS headers FROM outbox
            WHERE published_at IS NULL ORDER BY seq LIMIT $1
            """,
            self._batch_size,
        )
        if not rows:
            return 0
        # send() only enqueues into the producer's batches (it does not yield to the event
        # loop); awaiting the futures waits for acks. Every _SENDS_PER_SLICE sends the loop gets
        # a turn, so a large batch does not hold up the requests of the service it runs in.
        futures = []
        for n, row in enumerate(rows, 1):
            futures.append(
                await self._producer.send(
                    self._topic_prefix + row["topic"],
                    value=bytes(row["payload"]),
                    key=row["key"].encode(),
                    # Most rows carry no trace context ('{}'): no JSON to parse for those.
                    headers=[] if row["headers"] == "{}" else _headers(row["headers"]),
                )
            )
            if n % _SENDS_PER_SLICE == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])",
            [row["seq"] for row in rows],
        )
        for row in rows:
            self.published[(row["topic"], _event_type(bytes(row["payload"])))] += 1
        return len(rows)

    async def _prune(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1)",
            self._retention_hours,
        )

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a wake-up or `seconds`; True if woken."""
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
            woken = True
        self._wake.clear()
        return woken


def _headers(stored: str) -> list[tuple[str, bytes]]:
    return to_kafka_headers(json.loads(stored))


_TYPE_KEY = b'"type":"'


def _event_type(payload: bytes) -> str:
    """The CloudEvent type for the published-events metric. Envelopes are written compact with
    `type` ahead of `data` (CloudEvent.to_json, link-service's click encoder), so the first
    `"type":"` is the envelope's (an escaped quote inside a string value cannot match): found
    without parsing the payload, which for a busy outbox cost more than publishing it."""
    start = payload.find(_TYPE_KEY)
    if start != -1:
        start += len(_TYPE_KEY)
        end = payload.find(b'"', start)
        if end != -1 and payload.find(b'"data"', 0, start) == -1:
            return payload[start:end].decode(errors="replace")
    try:
        return str(json.loads(payload).get("type", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"

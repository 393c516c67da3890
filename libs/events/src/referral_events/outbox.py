"""Transactional outbox.

`enqueue_rows` writes events (rows built by `emitter.Emitter`) in the caller's transaction,
beside the state change that implies it, so either both are durable or neither is. `OutboxRelay`
publishes rows in order with the idempotent producer and marks them published. Publishing is at
least once: a crash between the broker's ack and the mark republishes, and the consumers' inbox
drops the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from referral_events.database_errors import DB_ERRORS
from referral_events.kafka import RenewableProducer
from referral_events.tracing import to_kafka_headers

log = logging.getLogger(__name__)

# What the broker (or the producer, before sending) answers about one message that it will never
# take as it is; anything else is about the broker or the network and is retried whole.
REFUSED_MESSAGE_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
)

# Sends between two turns of the event loop (a send costs tens of microseconds of CPU).
_SENDS_PER_SLICE = 32

# A published row is kept `retention_hours` (a copy of what went out, for whoever reads the
# outbox after the relay: attribution-service's analytics fold), or deleted as it is published
# (retention 0): a delete leaves one dead row version where a mark writes a new one, with its
# index entries, and a prune deletes it later (link-service: a row per click, thousands a second).
_MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])"
_DELETE_PUBLISHED = "DELETE FROM outbox WHERE seq = ANY($1::bigint[])"


# The trace context of a row written outside any span (a redirect's click): nothing to carry.
NO_TRACE = "{}"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row: the serialised envelope, where it goes, and the trace context (JSON) that
    was current when it was built, which the relay publishes as Kafka headers."""

    event_id: str
    topic: str
    key: str
    payload: bytes
    headers: str = NO_TRACE


def rows_of(
    rows: Sequence[OutboxRow],
) -> tuple[list[str], list[str], list[str], list[bytes], list[str]]:
    """Column arrays of `rows`, in the order of `insert_rows_sql`'s parameters."""
    return (
        [r.event_id for r in rows],
        [r.topic for r in rows],
        [r.key for r in rows],
        [r.payload for r in rows],
        [r.headers for r in rows],
    )


def insert_rows_sql(first: int, *, idempotent: bool = True) -> str:
    """The INSERT of outbox rows passed as the five column arrays of `rows_of`, as parameters
    `$first` .. `$first+4`: for a statement that writes rows of its own beside them (a CTE), so
    the outbox's columns are spelled here only. Rows keep their order. `idempotent` drops a
    repeated event id (ids derived from a cause); rows with fresh random ids (a redirect's
    clicks) skip it, which spares Postgres a speculative insertion and a sort per row."""
    e, t, k, p, h = (f"${first + i}" for i in range(5))
    arrays = f"{e}::text[], {t}::text[], {k}::text[], {p}::bytea[], {h}::text[]"
    if not idempotent:
        return f"""
        INSERT INTO outbox (event_id, topic, key, payload, headers)
        SELECT e, t, k, p, h::jsonb FROM unnest({arrays}) AS u(e, t, k, p, h)
    """  # noqa: S608  (only parameter numbers are formatted in)
    return f"""
        INSERT INTO outbox (event_id, topic, key, payload, headers)
        SELECT e, t, k, p, h::jsonb
        FROM unnest({arrays}) WITH ORDINALITY AS u(e, t, k, p, h, n)
        ORDER BY n
        ON CONFLICT (event_id) DO NOTHING
    """  # noqa: S608  (only parameter numbers are formatted in)


# The notification is delivered at commit (and folded with others of the same transaction): it
# wakes the relay. One statement with the insert: one round trip.
_ENQUEUE = f"""
    WITH ins AS ({insert_rows_sql(1)})
    SELECT pg_notify(current_schema() || '_outbox', '')
"""
_ENQUEUE_QUIET = insert_rows_sql(1)


async def enqueue_rows(
    conn: asyncpg.Connection, rows: Sequence[OutboxRow], *, notify: bool = True
) -> None:
    """Add `rows` (built by an `emitter.Emitter`) to the outbox in the transaction `conn` is
    in, in one statement. `notify` wakes the relay at commit with NOTIFY; a writer in the
    leading relay's process may wake it itself instead (`OutboxRelay.wake`), since NOTIFY makes
    Postgres serialise the commits of all notifying transactions."""
    if not rows:
        return
    await conn.execute(_ENQUEUE if notify else _ENQUEUE_QUIET, *rows_of(rows))


@dataclass
class OutboxStats:
    backlog: int
    oldest_age_seconds: float
    parked: int = 0


async def outbox_stats(conn: asyncpg.Connection) -> OutboxStats:
    """Unpublished rows waiting for the relay (parked ones counted apart: they wait for an
    operator, not for the relay)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE parked_at IS NULL) AS backlog,
               coalesce(extract(epoch FROM
                   now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0) AS age,
               count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked
        FROM outbox WHERE published_at IS NULL
        """
    )
    assert row is not None
    return OutboxStats(
        backlog=int(row["backlog"]), oldest_age_seconds=float(row["age"]), parked=int(row["parked"])
    )


async def release_parked(conn: asyncpg.Connection) -> int:
    """Give parked rows back to the relay (after fixing what the broker refused, e.g. its
    message.max.bytes); returns how many. They go out after the rows published meanwhile."""
    released: str = await conn.execute(
        "UPDATE outbox SET parked_at = NULL, attempts = 0 WHERE parked_at IS NOT NULL"
    )
    return int(released.split()[-1])


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
        max_attempts: int = 5,
        server_settings: dict[str, str] | None = None,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        """`new_producer` makes (unstarted) the producer that replaces one whose idempotent
        state broke (see `run`); the relay then owns it."""
        self._dsn = dsn
        self._producers = RenewableProducer(producer, new_producer)
        self._renew = False
        self._schema = schema
        self._topic_prefix = topic_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention_hours = retention_hours
        self._max_attempts = max_attempts
        self._server_settings = server_settings or {}
        # Seconds to wait after a wake-up before reading: rows committed meanwhile go out in
        # the same SELECT, produce request and UPDATE. A service whose outbox is written many
        # times a second (link-service: a commit per few clicks) sets it; 0 reads at once.
        self.linger = linger
        self._wake = asyncio.Event()
        self._stopping = False
        self.is_leader = False
        # Acknowledged publishes by (topic, event type), read by the metrics exporter.
        self.published: Counter[tuple[str, str]] = Counter()

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer publishing now (a replacement once the first one broke)."""
        return self._producers.producer

    async def run(self) -> None:
        while not self._stopping:
            try:
                if self._renew:
                    await self._renew_producer()
                await self._lead()
            except OutOfOrderSequenceNumber as exc:
                # Seen after a 60 s broker outage (tests/chaos/test_outages.py): the broker
                # refuses a batch's sequence number, aiokafka fails the batch without resetting
                # the producer's sequence, and every later batch is refused the same way. A new
                # producer (a new producer id, sequences from 0) publishes the unmarked rows
                # again, in order; nothing was marked, so nothing is lost.
                log.warning("outbox relay: producer broken (%r), starting a new one", exc)
                self.is_leader = False
                self._renew = self._producers.renewable
                await self._sleep(self._poll_interval)
            except (*DB_ERRORS, KafkaError) as exc:
                # Nothing was marked published, so the same rows go out again on the next lead.
                log.warning("outbox relay interrupted, retrying: %r", exc)
                self.is_leader = False
                await self._sleep(self._poll_interval)

    async def _renew_producer(self) -> None:
        await self._producers.renew(self._producers.producer)
        self._renew = False

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
                **self._server_settings,
                "search_path": self._schema,
                "application_name": f"{self._schema}-outbox-relay",
                # Marking rows published need not wait for the WAL flush: should Postgres
                # lose the last marks in a crash, those rows are published again, which
                # at-least-once publishing allows anyway (the inbox drops repeats). It keeps
                # the relay's commits off the disk queue the services' own commits wait in.
                "synchronous_commit": "off",
                # One generic plan per statement and connection, made with sequential scans
                # off: each of the relay's statements has one right plan whatever the outbox's
                # size (the pending rows by `outbox_pending`, marks by the primary key, the
                # prune by the BRIN index). Left to Postgres, a generic plan made while the
                # outbox was small (no statistics yet) kept seq-scanning the growing table on
                # every mark; planning every run instead cost more than the SELECT and mark
                # themselves (about 0.23 ms a cycle on a 30,000-row outbox).
                "plan_cache_mode": "force_generic_plan",
                "enable_seqscan": "off",
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
                    await prune_published(conn, self._retention_hours)
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
            WHERE published_at IS NULL AND parked_at IS NULL ORDER BY seq LIMIT $1
            """,
            self._batch_size,
        )
        if not rows:
            return 0
        # send() only enqueues into the producer's batches (it does not yield to the event
        # loop); awaiting the futures waits for acks. Every _SENDS_PER_SLICE sends the loop gets
        # a turn, so a large batch does not hold up the requests of the service it runs in.
        sent: list[tuple[asyncpg.Record, asyncio.Future[object]]] = []
        refused: list[tuple[asyncpg.Record, BaseException]] = []
        for n, row in enumerate(rows, 1):
            try:
                future = await self._producers.producer.send(
                    self._topic_prefix + row["topic"],
                    value=bytes(row["payload"]),
                    key=row["key"].encode(),
                    # Most rows carry no trace context ('{}'): no JSON to parse for those.
                    headers=[] if row["headers"] == "{}" else _headers(row["headers"]),
                )
            except REFUSED_MESSAGE_ERRORS as exc:
                refused.append((row, exc))
                continue
            sent.append((row, future))
            if n % _SENDS_PER_SLICE == 0:
                await asyncio.sleep(0)
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        published: list[asyncpg.Record] = []
        for (row, _), result in zip(sent, results, strict=True):
            if isinstance(result, REFUSED_MESSAGE_ERRORS):
                refused.append((row, result))
            elif isinstance(result, BaseException):
                # The broker or the network, not the message: nothing is marked, the same rows
                # go out again on the next lead (at least once; the inboxes drop repeats).
                raise result
            else:
                published.append(row)
        await conn.execute(
            _DELETE_PUBLISHED if self._retention_hours == 0 else _MARK_PUBLISHED,
            [row["seq"] for row in published],
        )
        for row in published:
            self.published[(row["topic"], _event_type(bytes(row["payload"])))] += 1
        if refused:
            await self._refused(conn, refused)
        return len(rows)

    async def _refused(
        self, conn: asyncpg.Connection, refused: list[tuple[asyncpg.Record, BaseException]]
    ) -> None:
        """Count an attempt on each row the broker refused for what it is; park it after
        `max_attempts`, so the rows behind it keep flowing (alert: ReferralOutboxParked)."""
        parked = await conn.fetch(
            """
            UPDATE outbox o SET attempts = o.attempts + 1, last_error = u.error,
                                parked_at = CASE WHEN o.attempts + 1 >= $3 THEN now() END
            FROM unnest($1::bigint[], $2::text[]) AS u(seq, error)
            WHERE o.seq = u.seq
            RETURNING o.seq, o.topic, o.parked_at IS NOT NULL AS parked
            """,
            [row["seq"] for row, _ in refused],
            [repr(exc)[:500] for _, exc in refused],
            self._max_attempts,
        )
        for row in parked:
            if row["parked"]:
                log.error(
                    "outbox row %s for %s parked after %d refusals; the rest flows on "
                    "(release with `<service> outbox-release`)",
                    row["seq"],
                    row["topic"],
                    self._max_attempts,
                )
            else:
                log.warning("outbox row %s for %s refused by the broker", row["seq"], row["topic"])

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a wake-up or `seconds`; True if woken."""
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
            woken = True
        self._wake.clear()
        return woken


async def prune_published(conn: asyncpg.Connection, retention_hours: int) -> None:
    """Forget rows published longer ago than the retention (the relay, every 10 minutes),
    found through the BRIN index on published_at (referral_events.sql.OUTBOX_BY_PUBLISHED_V3)."""
    await conn.execute(
        "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1)",
        retention_hours,
    )


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

"""Idempotent consumer (inbox).

Each message is handled in one Postgres transaction that first records (consumer, event id) in
the inbox; a redelivered event finds its row and changes nothing. Offsets are committed only
after the transactions of a batch commit, so a crash redelivers rather than loses.

Failures split two ways. Infrastructure trouble (database unreachable) is retried without end:
moving on would skip events. A message that keeps failing on its own (bad payload, a handler
bug) goes to `<topic>.dlq` with the error in its headers after `max_attempts`, and the consumer
moves on; operators replay it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from opentelemetry import trace
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from referral_events.contracts.privacy import PrivacyRequested
from referral_events.database_errors import INFRASTRUCTURE_ERRORS
from referral_events.envelope import CloudEvent, EventPayload
from referral_events.kafka import PLAINTEXT, KafkaSecurity, RenewableProducer, make_consumer
from referral_events.privacy import Tombstones
from referral_events.registry import payload_type
from referral_events.topics import dlq
from referral_events.tracing import context_from_kafka_headers, recent_events

log = logging.getLogger(__name__)
tracer = trace.get_tracer("referral_events.inbox")

Handler = Callable[[asyncpg.Connection, CloudEvent, Any], Awaitable[None]]
BatchHandler = Callable[[asyncpg.Connection, Sequence[tuple[CloudEvent, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class Batched:
    """A handler for events that arrive by the thousand (clicks): the consumer hands it every
    event of an unbroken run of its type from one fetch, in order, in ONE transaction with the
    run's inbox rows written by one statement (repeats dropped). Called as a plain `Handler` it
    takes a run of one, so one-by-one work (a failed run retried, a DLQ replay) goes through
    the same code."""

    handle: BatchHandler

    async def __call__(self, conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        await self.handle(conn, [(event, payload)])


# (record, event, payload) of one decoded message
_Decoded = tuple[ConsumerRecord[bytes, bytes], CloudEvent, Any]
# a record and what decoding it gave: (event, payload, handler), or why it is poison
_Read = tuple[
    ConsumerRecord[bytes, bytes],
    "tuple[CloudEvent, EventPayload | None, Handler | None] | PoisonMessage",
]


# a decoded message and its plain handler, waiting for its run's transaction (group commit)
_Plain = tuple[ConsumerRecord[bytes, bytes], CloudEvent, Any, Handler]


class PoisonMessage(Exception):
    """The message can never be handled as it is (not an envelope, payload invalid)."""


class InboxConsumer:
    def __init__(
        self,
        *,
        name: str,
        group_id: str,
        topics: list[str],
        handlers: Mapping[str, Handler],
        pool: asyncpg.Pool,
        bootstrap_servers: str,
        dlq_producer: AIOKafkaProducer | RenewableProducer,
        max_attempts: int = 5,
        retry_base_seconds: float = 0.2,
        retention_days: float = 35.0,
        prune_interval_seconds: float = 600.0,
        security: KafkaSecurity = PLAINTEXT,
        tombstones: Tombstones | None = None,
        group_commit: bool = False,
        commit_interval_seconds: float = 0.0,
    ) -> None:
        self.name = name
        # A poll's events for plain handlers in one transaction (`_apply_together`) rather
        # than one each: for consumers whose handlers take no locks an API request takes in
        # another order (read models, fan-out), so holding them to the end of the run
        # deadlocks nothing.
        self._group_commit = group_commit
        # Offsets handled are committed at most this often, and at once when a poll finds
        # nothing or the consumer stops. Committing later only widens what a crash or a
        # rebalance redelivers, which the inbox drops; committing every poll cost the broker a
        # log append per poll per group.
        self._commit_interval = commit_interval_seconds
        # Erased people (referral_events.privacy): an event naming one is dropped unhandled.
        self._tombstones = tombstones
        self._group_id = group_id
        self._topics = topics
        self._handlers = handlers
        self._pool = pool
        self._bootstrap = bootstrap_servers
        self._security = security
        self._dlq_producer = dlq_producer
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._retention_days = retention_days
        self._prune_interval = prune_interval_seconds
        # When the loop last got through a poll (records handled and committed, or none there):
        # a record retried without end (a lock held, Postgres away) leaves it behind, which
        # `stalled_seconds` shows (alert: ReferralConsumerStalled).
        self._last_progress = time.monotonic()
        self.pruned = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        self.duplicates = 0
        self.dead_lettered = 0
        # (outcome, event type) -> count, outcome one of handled/duplicate/dead_lettered; and
        # dead-lettered messages per source topic. Read by the metrics exporter.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.dead_lettered_by_topic: Counter[str] = Counter()

    async def run(self) -> None:
        self._consumer = make_consumer(
            self._bootstrap, self._group_id, self._topics, self._security
        )
        await self._consumer.start()
        next_prune = time.monotonic() + self._prune_interval
        handled: dict[TopicPartition, int] = {}  # offsets handled, not committed yet
        committed_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                self._last_progress = time.monotonic()
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
                if batches:
                    await self._refresh_tombstones()
                    await self._handle_poll(batches)
                    handled |= {tp: records[-1].offset + 1 for tp, records in batches.items()}
                now = time.monotonic()
                if handled and (not batches or now - committed_at >= self._commit_interval):
                    await self._commit(self._consumer, handled)
                    handled, committed_at = {}, now
                if now >= next_prune:
                    await self.prune()
                    next_prune = time.monotonic() + self._prune_interval
            if handled:
                await self._commit(self._consumer, handled)
        finally:
            await self._consumer.stop()

    async def _commit(
        self, consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Commit a handled poll, every partition of it in one request. A replica joining or
        leaving the group meanwhile may have moved a partition to another member (a
        rebalance): the commit is refused, and the new owner reads these records again from
        the last commit, which its inbox drops as duplicates. So that is no failure of this
        consumer: it goes on polling (the next poll takes its new assignment) instead of
        crashing and rebalancing the group once more."""
        try:
            await consumer.commit(dict(offsets))
        except (CommitFailedError, IllegalStateError) as exc:
            log.info(
                "consumer %s: %s moved to another member before its commit (%s); "
                "it reads them again and its inbox drops them",
                self.name,
                ", ".join(f"{tp.topic}/{tp.partition}" for tp in offsets),
                type(exc).__name__,
            )

    async def _refresh_tombstones(self, *, force: bool = False) -> None:
        if self._tombstones is None:
            return
        try:
            await self._tombstones.refresh(self._pool, force=force)
        except INFRASTRUCTURE_ERRORS as exc:
            # the handlers will meet the same trouble and retry; the last read stays in force
            log.warning("consumer %s: tombstones not refreshed: %r", self.name, exc)

    def _erased(self, event: CloudEvent) -> bool:
        """The event names an erased person: count it and leave it unhandled."""
        if self._tombstones is None or not self._tombstones.erased(event.tenantid, event.data):
            return False
        self._tombstones.dropped += 1
        self.outcomes[("erased", event.type)] += 1
        return True

    def stalled_seconds(self) -> float:
        """Seconds since the loop last got through a poll; near 0 while it keeps up."""
        return time.monotonic() - self._last_progress

    async def prune(self, *, batch: int = 10_000, max_batches: int = 20) -> int:
        """Forget inbox rows older than the retention, a bounded batch at a time. The retention
        outlasts every topic's (30 days): an event can no longer be redelivered once the log
        has dropped it. Returns the rows deleted; what is left goes in the next round."""
        deleted = 0
        try:
            for _ in range(max_batches):
                async with self._pool.acquire() as conn:
                    status = await conn.execute(
                        """
                        DELETE FROM inbox WHERE ctid IN (
                            SELECT ctid FROM inbox
                            WHERE processed_at < now() - make_interval(secs => $2) AND consumer = $1
                            LIMIT $3)
                        """,
                        self.name,
                        self._retention_days * 86400,
                        batch,
                    )
                n = int(status.split()[-1])
                deleted += n
                if n < batch:
                    break
        except (*INFRASTRUCTURE_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("consumer %s: inbox pruning failed, next round retries: %r", self.name, exc)
        self.pruned += deleted
        return deleted

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave the group."""
        self._stopping.set()

    @property
    def group_id(self) -> str:
        return self._group_id

    async def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the log end per assigned partition, as of the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return {}
        result: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout=1)
            except (Exception, TimeoutError) as exc:  # revoked by a rebalance meanwhile
                log.debug("no position for %s: %r", tp, exc)
                continue
            result[tp] = max(end - position, 0)
        return result

    async def replay(self, record: ConsumerRecord[bytes, bytes]) -> str:
        """Handle one record outside the consume loop (a dead letter being replayed, see
        `from_dead_letter`) exactly as the loop would: inbox first, DLQ again if it still fails.
        Returns "handled", "duplicate", "dead_lettered" or "ignored" (no handler here)."""
        before = (self.processed, self.duplicates, self.dead_lettered)
        await self._handle_record(record)
        after = (self.processed, self.duplicates, self.dead_lettered)
        for outcome, b, a in zip(
            ("handled", "duplicate", "dead_lettered"), before, after, strict=True
        ):
            if a > b:
                return outcome
        return "ignored"

    async def _handle_poll(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """A poll's records. The partitions of one topic whose records all go to one `Batched`
        handler (clicks, spread by key over many partitions) are taken in as ONE run, one
        transaction for the whole poll: each partition's records keep their order in it, and
        between partitions there is no order to keep. With group commit, so are the
        partitions whose records all go to plain handlers, whatever their topics. Any other
        partition goes on its own, in order (_handle_records)."""
        pooled: dict[tuple[str, Batched], list[_Decoded]] = {}
        together: list[_Plain] = []
        for tp, records in batches.items():
            read = [self._read(record) for record in records]  # each decoded once
            handled = self._handled(read)
            if handled is None:  # poison among them
                await self._handle_records(read)
                continue
            kinds = {handler for *_, handler in handled}
            # an erased person's events are left out (and counted) only where the partition
            # goes whole: record by record, _handle_records does it in order
            if len(kinds) == 1 and isinstance(batched := next(iter(kinds)), Batched):
                pooled.setdefault((tp.topic, batched), []).extend(
                    (r, e, p) for r, e, p, _ in handled if not self._erased(e)
                )
            elif (
                self._group_commit
                and not any(isinstance(k, Batched) for k in kinds)
                and all(e.type != PrivacyRequested.TYPE for _, e, _, _ in handled)
            ):
                together.extend(item for item in handled if not self._erased(item[1]))
            elif kinds:
                await self._handle_records(read)
        for (_, handler), run in pooled.items():
            await self._flush(run, handler)
        await self._flush_together(together)

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> _Read:
        try:
            return record, self._decode(record)
        except PoisonMessage as exc:
            return record, exc

    def _handled(self, read: Sequence[_Read]) -> list[_Plain] | None:
        """A partition's records that this consumer handles, each with its handler (without
        the events it ignores), or None when one of them is poison."""
        handled: list[_Plain] = []
        for record, decoded in read:
            if isinstance(decoded, PoisonMessage):
                return None
            event, payload, handler = decoded
            if handler is not None:
                handled.append((record, event, payload, handler))
        return handled

    async def _handle_records(self, read: Sequence[_Read]) -> None:
        """A fetched partition's records in order; unbroken runs for one `Batched` handler go
        through it together, and with group commit so do unbroken runs of plain handlers'
        events. A privacy request goes alone: the tombstones it commits are in force for the
        events after it."""
        run: list[_Decoded] = []
        run_handler: Batched | None = None
        together: list[_Plain] = []
        for record, decoded in read:
            if isinstance(decoded, PoisonMessage):
                await self._flush(run, run_handler)
                await self._flush_together(together)
                run, together = [], []
                await self._dead_letter(record, decoded)
                continue
            event, payload, handler = decoded
            if handler is None or self._erased(event):
                continue  # not an event this consumer cares about, or about an erased person
            if isinstance(handler, Batched):
                await self._flush_together(together)
                together = []
                if handler is not run_handler:
                    await self._flush(run, run_handler)
                    run, run_handler = [], handler
                run.append((record, event, payload))
                continue
            await self._flush(run, run_handler)
            run, run_handler = [], None
            if self._group_commit and event.type != PrivacyRequested.TYPE:
                together.append((record, event, payload, handler))
                continue
            await self._flush_together(together)
            together = []
            await self._handle_decoded(record, event, payload, handler)
        await self._flush(run, run_handler)
        await self._flush_together(together)

    async def _handle_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event, payload, handler = self._decode(record)
        except PoisonMessage as exc:
            await self._dead_letter(record, exc)
            return
        await self._refresh_tombstones()
        if handler is not None and not self._erased(event):
            await self._handle_decoded(record, event, payload, handler)

    async def _handle_decoded(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: CloudEvent,
        payload: EventPayload | None,
        handler: Handler,
    ) -> None:
        with self._event_span(record, event):
            await self._apply_with_retries(record, event, payload, handler)
        if event.type == PrivacyRequested.TYPE:
            # this service's own erasure has just committed its tombstones: in force at once
            await self._refresh_tombstones(force=True)

    @contextlib.contextmanager
    def _event_span(
        self, record: ConsumerRecord[bytes, bytes], event: CloudEvent
    ) -> Iterator[trace.Span]:
        """The span of one event's handling, a child of the producer's trace context."""
        with tracer.start_as_current_span(
            f"consume {record.topic}",
            context=context_from_kafka_headers(record.headers),
            kind=trace.SpanKind.CONSUMER,
        ) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", record.topic)
            span.set_attribute("messaging.consumer.group.name", self.name)
            span.set_attribute("cloudevents.event_id", event.id)
            span.set_attribute("cloudevents.event_type", event.type)
            recent_events.remember(event.id)
            yield span

    async def _flush(self, run: list[_Decoded], handler: Batched | None) -> None:
        """A run for a `Batched` handler: together in one transaction, or, should that fail,
        one by one with the usual retries and dead-lettering (a poison event in a run must not
        hold back the others)."""
        if not run or handler is None:
            return
        if len(run) > 1:
            try:
                await self._apply_run(run, handler)
                return
            except Exception as exc:
                log.warning(
                    "consumer %s: a run of %d failed together, one by one now: %r",
                    self.name,
                    len(run),
                    exc,
                )
        for record, event, payload in run:
            await self._handle_decoded(record, event, payload, handler)

    async def _flush_together(self, plain: list[_Plain]) -> None:
        """Plain handlers' events in one transaction, each its own handler in order; should
        that fail, one by one with the usual retries and dead-lettering, as `_flush`."""
        if len(plain) > 1:
            try:
                await self._apply_together(plain)
                return
            except Exception as exc:
                log.warning(
                    "consumer %s: %d events failed together, one by one now: %r",
                    self.name,
                    len(plain),
                    exc,
                )
        for record, event, payload, handler in plain:
            await self._handle_decoded(record, event, payload, handler)

    async def _apply_together(self, plain: list[_Plain]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            new = await self._record_inbox(conn, [(r, e) for r, e, _, _ in plain])
            for (record, event, payload, handler), is_new in zip(plain, new, strict=True):
                if is_new:
                    with self._event_span(record, event) as span:
                        span.set_attribute("messaging.batch.message_count", len(plain))
                        await handler(conn, event, payload)
        self._count([e for _, e, _, _ in plain], new)

    async def _record_inbox(
        self,
        conn: asyncpg.Connection,
        items: Sequence[tuple[ConsumerRecord[bytes, bytes], CloudEvent]],
    ) -> list[bool]:
        """A run's inbox rows by one statement; for each item, whether it is to be handled:
        its event not seen before, and a repeat within the run counted once."""
        unseen = {
            r["event_id"]
            for r in await conn.fetch(
                """
                INSERT INTO inbox (consumer, event_id, event_type, topic,
                                   kafka_partition, kafka_offset)
                SELECT $1, e, t, tp, p, o
                FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[])
                     AS u(e, t, tp, p, o)
                ON CONFLICT DO NOTHING RETURNING event_id
                """,
                self.name,
                [e.id for _, e in items],
                [e.type for _, e in items],
                [r.topic for r, _ in items],
                [r.partition for r, _ in items],
                [r.offset for r, _ in items],
            )
        }
        new: list[bool] = []
        for _, event in items:
            new.append(event.id in unseen)
            unseen.discard(event.id)
        return new

    def _count(self, events: Sequence[CloudEvent], new: Sequence[bool]) -> None:
        """A committed run's outcomes: each event handled, or a duplicate."""
        for event, is_new in zip(events, new, strict=True):
            self.outcomes[("handled" if is_new else "duplicate", event.type)] += 1
        self.processed += sum(new)
        self.duplicates += len(new) - sum(new)

    async def _apply_run(self, run: list[_Decoded], handler: Batched) -> None:
        with tracer.start_as_current_span(
            f"consume {run[0][0].topic} batch", kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.batch.message_count", len(run))
            span.set_attribute("messaging.consumer.group.name", self.name)
            async with self._pool.acquire() as conn, conn.transaction():
                new = await self._record_inbox(conn, [(r, e) for r, e, _ in run])
                fresh = [(e, p) for (_, e, p), is_new in zip(run, new, strict=True) if is_new]
                if fresh:
                    await handler.handle(conn, fresh)
        self._count([e for _, e, _ in run], new)

    def _decode(
        self, record: ConsumerRecord[bytes, bytes]
    ) -> tuple[CloudEvent, EventPayload | None, Handler | None]:
        if record.value is None:
            raise PoisonMessage("empty message")
        try:
            event = CloudEvent.from_json(record.value)
        except ValidationError as exc:
            raise PoisonMessage(f"not a CloudEvent: {exc.errors()[:3]}") from exc
        handler = self._handlers.get(event.type)
        if handler is None:
            return event, None, None
        try:
            payload = payload_type(event.type).model_validate(event.data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {event.type} payload: {exc.errors()[:3]}") from exc
        return event, payload, handler

    async def _apply_with_retries(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: CloudEvent,
        payload: EventPayload | None,
        handler: Handler,
    ) -> None:
        failures = 0

        def retryable(exc: BaseException) -> bool:
            nonlocal failures
            if isinstance(exc, INFRASTRUCTURE_ERRORS):
                log.warning("consumer %s: database unavailable, retrying: %r", self.name, exc)
                return True
            failures += 1
            log.warning("consumer %s failed on %s (%d): %r", self.name, event.id, failures, exc)
            return failures < self._max_attempts

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retryable),
                wait=wait_exponential(multiplier=self._retry_base, max=30),
                reraise=True,
            ):
                with attempt:
                    await self._apply(record, event, payload, handler)
        except Exception as exc:
            log.exception("consumer %s gives up on %s", self.name, event.id)
            await self._dead_letter(record, exc)

    async def _apply(
        self,
        record: ConsumerRecord[bytes, bytes],
        event: CloudEvent,
        payload: EventPayload | None,
        handler: Handler,
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                """
                INSERT INTO inbox (consumer, event_id, event_type, topic, kafka_partition,
                                   kafka_offset)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT DO NOTHING RETURNING true
                """,
                self.name,
                event.id,
                event.type,
                record.topic,
                record.partition,
                record.offset,
            )
            if not fresh:
                self.duplicates += 1
                self.outcomes[("duplicate", event.type)] += 1
                return
            await handler(conn, event, payload)
        self.processed += 1
        self.outcomes[("handled", event.type)] += 1
        log.debug("consumer %s handled %s %s", self.name, event.type, event.id)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException
    ) -> None:
        self.dead_lettered += 1
        self.dead_lettered_by_topic[record.topic] += 1
        headers = [
            *(record.headers or ()),
            ("dlq.consumer", self.name.encode()),
            ("dlq.error", repr(error)[:1000].encode()),
            ("dlq.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        await self._dlq_producer.send_and_wait(
            dlq(record.topic), value=record.value, key=record.key, headers=headers
        )
        log.error(
            "consumer %s dead-lettered %s/%s/%s: %r",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            error,
        )


DLQ_HEADERS = ("dlq.consumer", "dlq.error", "dlq.source")


def dead_letter_consumer(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The consumer (inbox name) that gave up on a dead-lettered record."""
    for key, value in record.headers or ():
        if key == "dlq.consumer" and value is not None:
            return bytes(value).decode(errors="replace")
    return None


def from_dead_letter(record: ConsumerRecord[bytes, bytes]) -> ConsumerRecord[bytes, bytes]:
    """The record as it was on its source topic, rebuilt from its DLQ copy: the source
    topic/partition/offset from `dlq.source`, the original headers (trace context included)
    without the dlq.* ones."""
    headers = list(record.headers or ())
    source = next((bytes(v).decode() for k, v in headers if k == "dlq.source" and v), None)
    if source is None:
        raise ValueError(f"{record.topic}/{record.partition}/{record.offset} has no dlq.source")
    topic, partition, offset = source.rsplit("/", 2)
    return ConsumerRecord(
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        timestamp=record.timestamp,
        timestamp_type=record.timestamp_type,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=record.serialized_key_size,
        serialized_value_size=record.serialized_value_size,
        headers=tuple((k, v) for k, v in headers if k not in DLQ_HEADERS),
    )


__all__ = [
    "Handler",
    "InboxConsumer",
    "PoisonMessage",
    "TopicPartition",
    "dead_letter_consumer",
    "from_dead_letter",
]

"""What a review found (issue #21): one event the broker always refuses blocked a schema's whole
outbox; the inbox was never pruned; with no lock timeout a consumer waited on a held lock
forever and nothing showed it. On a real broker and a real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber

from devstack.pytest_plugin import Namespace
from devstack.testing import (
    StatementRecorder,
    eventually,
    read_to_end,
    running,
    scans_without_index,
)
from referral_events import CloudEvent
from referral_events.contracts.link import CodeCreated
from referral_events.emitter import Emitter
from referral_events.inbox import InboxConsumer
from referral_events.kafka import make_producer
from referral_events.outbox import (
    OutboxRelay,
    OutboxRow,
    enqueue_rows,
    outbox_stats,
    prune_published,
    release_parked,
)
from referral_events.sql import OUTBOX_BY_PUBLISHED_V3
from referral_events.topics import LINK_EVENTS
from servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration
SCHEMA = "libpark"
EMITTER = Emitter("libtest", LINK_EVENTS)


@pytest.fixture
async def env(scratch_schema: Any) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    tables = [
        OUTBOX_BY_PUBLISHED_V3,
        "CREATE TABLE counters (name text PRIMARY KEY, n integer NOT NULL)",
    ]
    # The session settings every service's pool gets (servicekit.runtime), with a short lock
    # timeout so the test does not wait the production 10 s; as the login role (this scratch
    # schema has none of the services' row-level security or their role's grants).
    settings = ServiceSettings(db_lock_timeout_ms=300, database_role="").db_session_settings()
    async with scratch_schema(
        SCHEMA, tables, [LINK_EVENTS], partitions=2, server_settings=settings
    ) as env:
        yield env


def code_event(i: int) -> CodeCreated:
    return CodeCreated(code=f"C{i:04d}", advocate_id="adv_1", program_id="prg")


async def _relay_past_a_refused_row(
    env, namespace, good: int, **relay_options: int
) -> tuple[list[OutboxRow], list[str]]:
    """`good` events with one the broker always refuses in the middle, through a relay until
    only that one is left (parked); the good rows, and the codes published, in topic order."""
    pool, producer = env
    rows = [EMITTER.row(code_event(i), tenant_id="t", key="adv_1") for i in range(good)]
    # Larger than the producer's max_request_size (1 MiB): refused for what it is, every time.
    huge = OutboxRow("evt_huge", LINK_EVENTS, "adv_1", b"x" * (2 * 1024 * 1024))
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_rows(conn, [*rows[: good // 2], huge, *rows[good // 2 :]])

    relay = OutboxRelay(
        dsn=namespace.database_url,
        schema=SCHEMA,
        producer=producer,
        topic_prefix=namespace.topic_prefix,
        batch_size=8,
        poll_interval=0.1,
        **relay_options,
    )
    async with running(relay):

        async def drained() -> bool:
            async with pool.acquire() as conn:
                stats = await outbox_stats(conn)
            return stats.backlog == 0 and stats.parked == 1

        await eventually(drained, timeout=30)

    records = await read_to_end(
        namespace.kafka_bootstrap_servers, namespace.topic_prefix + LINK_EVENTS
    )
    return rows, [CloudEvent.from_json(r.value).data["code"] for r in records]


async def test_a_row_the_broker_refuses_is_parked_and_the_rest_flows(env, namespace) -> None:
    pool, _ = env
    _, published = await _relay_past_a_refused_row(env, namespace, 20, max_attempts=3)
    assert published == [f"C{i:04d}" for i in range(20)]  # in order, the huge one left out
    async with pool.acquire() as conn:
        parked = await conn.fetchrow(
            "SELECT attempts, last_error, parked_at FROM outbox WHERE event_id = 'evt_huge'"
        )
        assert parked["attempts"] == 3 and parked["parked_at"] is not None
        assert "MessageSizeTooLarge" in parked["last_error"]
        assert await release_parked(conn) == 1
        released = await conn.fetchrow(
            "SELECT attempts, parked_at FROM outbox WHERE event_id = 'evt_huge'"
        )
        assert released["attempts"] == 0 and released["parked_at"] is None


@pytest.mark.parametrize("keep_hours", [0, 72])
async def test_a_published_row_is_kept_or_deleted_as_the_service_says(
    env, namespace, keep_hours: int
) -> None:
    """OUTBOX_KEEP_PUBLISHED_HOURS: 0 deletes each row as it is published (link-service's
    clicks), otherwise it is marked and kept; either way every event goes out once, in order,
    and a parked row stays for its release."""
    pool, _ = env
    good, published = await _relay_past_a_refused_row(
        env, namespace, 30, max_attempts=2, retention_hours=keep_hours
    )
    assert published == [f"C{i:04d}" for i in range(30)]
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT event_id, published_at FROM outbox ORDER BY seq")
    kept = [r["event_id"] for r in left if r["published_at"] is not None]
    assert [r["event_id"] for r in left if r["published_at"] is None] == ["evt_huge"]
    assert kept == ([] if keep_hours == 0 else [row.event_id for row in good])


async def test_inbox_rows_past_the_retention_are_pruned_in_bounded_batches(env, namespace) -> None:
    pool, producer = env
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO inbox (consumer, event_id, event_type, topic, kafka_partition,
                               kafka_offset, processed_at)
            SELECT c, 'e' || c || n, 't', 'link.events', 0, n,
                   now() - make_interval(days => CASE WHEN n % 3 = 0 THEN 1 ELSE 40 END)
            FROM generate_series(1, 2500) n, unnest(ARRAY['mine', 'other']) c
            """
        )
    consumer = InboxConsumer(
        name="mine",
        group_id=namespace.topic_prefix + "mine",
        topics=[namespace.topic_prefix + LINK_EVENTS],
        handlers={},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        retention_days=35,
    )
    old_mine = 2500 - 2500 // 3
    assert await consumer.prune(batch=400, max_batches=2) == 800  # bounded: the rest next round
    assert await consumer.prune(batch=400, max_batches=100) == old_mine - 800
    assert consumer.pruned == old_mine
    async with pool.acquire() as conn:
        left = dict(await conn.fetch("SELECT consumer, count(*) FROM inbox GROUP BY consumer"))
    assert left == {"mine": 2500 // 3, "other": 2500}  # recent rows and other groups kept


async def test_a_held_lock_fails_the_handler_in_time_and_the_stall_shows(env, namespace) -> None:
    pool, producer = env
    topic = namespace.topic_prefix + LINK_EVENTS
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO counters VALUES ('codes', 0)")

    tries = 0

    async def apply(conn: asyncpg.Connection, event: CloudEvent, payload: CodeCreated) -> None:
        nonlocal tries
        tries += 1
        await conn.execute("UPDATE counters SET n = n + 1 WHERE name = 'codes'")

    consumer = InboxConsumer(
        name="locked",
        group_id=namespace.topic_prefix + "locked",
        topics=[topic],
        handlers={CodeCreated.TYPE: apply},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        max_attempts=1_000,  # a handler error is retried: only the lock holder ends the stall
        retry_base_seconds=0.05,
    )
    holder = await asyncpg.connect(namespace.database_url, server_settings={"search_path": SCHEMA})
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT * FROM counters WHERE name = 'codes' FOR UPDATE")
        event = EMITTER.event(code_event(1), tenant_id="t", key="adv_1")
        async with running(consumer):
            await producer.send_and_wait(topic, event.to_json(), key=b"adv_1")
            started = time.monotonic()
            # Each try gives up after the lock timeout (300 ms) instead of waiting forever, and
            # the loop's stall grows for the metric and the alert to see.
            await eventually(lambda: consumer.stalled_seconds() > 3, timeout=30)
            assert time.monotonic() - started < 20
            assert tries > 3  # without a lock timeout the first try would still be waiting
            await lock.rollback()

            async def applied() -> bool:
                async with pool.acquire() as conn:
                    n: int = await conn.fetchval("SELECT n FROM counters WHERE name = 'codes'")
                return n == 1

            await eventually(applied, timeout=30)
            await eventually(lambda: consumer.stalled_seconds() < 2, timeout=10)
    finally:
        await holder.close()


class _BrokenIdempotentProducer:
    """What an idempotent producer became after a long broker outage (tests/chaos/test_outages.py
    saw it once): the broker refuses every batch's sequence number, for good. A fault put in
    front of the relay, not a stand-in for Kafka: the replacement is a real producer."""

    def __init__(self) -> None:
        self.sends = 0
        self.stopped = False

    async def send(self, *_args: object, **_kwargs: object) -> asyncio.Future[object]:
        self.sends += 1
        failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        failed.set_exception(OutOfOrderSequenceNumber())
        return failed

    async def stop(self) -> None:
        self.stopped = True


async def test_a_producer_the_broker_keeps_refusing_is_replaced_and_nothing_is_lost(
    env, namespace
) -> None:
    pool, _ = env
    rows = [EMITTER.row(code_event(i), tenant_id="t", key="adv_1") for i in range(20)]
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_rows(conn, rows)

    async def backlog() -> int:
        async with pool.acquire() as conn:
            return (await outbox_stats(conn)).backlog

    def relay(producer: object, renew: bool) -> OutboxRelay:
        return OutboxRelay(
            dsn=namespace.database_url,
            schema=SCHEMA,
            producer=cast(AIOKafkaProducer, producer),
            topic_prefix=namespace.topic_prefix,
            batch_size=8,
            poll_interval=0.1,
            new_producer=(
                (lambda: make_producer(namespace.kafka_bootstrap_servers, "libtest"))
                if renew
                else None
            ),
        )

    # Without a way to a new producer the relay retries the broken one for ever: the case the
    # renewal is for (and what this test would see without it).
    broken = _BrokenIdempotentProducer()
    async with running(relay(broken, renew=False)):
        await asyncio.sleep(1.5)
    assert broken.sends > 8 and await backlog() == 20

    broken = _BrokenIdempotentProducer()
    renewing = relay(broken, renew=True)
    async with running(renewing):
        await eventually(lambda: _when_zero(backlog()), timeout=30)
    assert broken.stopped and renewing.producer is not broken
    await renewing.producer.stop()  # the relay's owner stops it (servicekit.runtime)
    records = await read_to_end(
        namespace.kafka_bootstrap_servers, namespace.topic_prefix + LINK_EVENTS
    )
    published = [CloudEvent.from_json(r.value).data["code"] for r in records]
    assert published == [f"C{i:04d}" for i in range(20)]  # all, once, in order


async def _when_zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_the_relay_prunes_published_rows_through_an_index(
    namespace: Namespace, env: tuple[asyncpg.Pool, AIOKafkaProducer]
) -> None:
    """The retention prune (every 10 minutes, over up to 72 hours of events) reads only the old
    block ranges, not the whole outbox."""
    rec = StatementRecorder()
    conn: Any = rec
    await prune_published(conn, 72)
    assert await scans_without_index(namespace.database_url, SCHEMA, rec.statements) == {}

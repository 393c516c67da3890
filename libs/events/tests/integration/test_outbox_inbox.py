"""The outbox relay and the inbox consumer on a real broker and a real database: rolled-back
work publishes nothing, committed work publishes once in per-key order, redelivery changes
nothing, a poison message goes to the DLQ and the consumer moves on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.testing import eventually, read_to_end, read_topic, running, wait_caught_up
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated
from referral_events.emitter import Emitter
from referral_events.inbox import InboxConsumer
from referral_events.outbox import OutboxRelay, outbox_stats
from referral_events.topics import LINK_EVENTS, dlq

pytestmark = pytest.mark.integration
SCHEMA = "libtest"


@pytest.fixture
async def env(scratch_schema: Any) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    table = "CREATE TABLE applied (event_id text PRIMARY KEY, code text)"
    async with scratch_schema(SCHEMA, [table], [LINK_EVENTS], partitions=3) as env:
        yield env


EMITTER = Emitter("libtest", LINK_EVENTS)


def code_event(i: int, advocate: str) -> CodeCreated:
    return CodeCreated(code=f"C{i:04d}", advocate_id=advocate, program_id="prg")


async def test_outbox_publishes_committed_events_once_in_key_order(env, namespace) -> None:
    pool, producer = env
    topic = namespace.topic_prefix + LINK_EVENTS
    async with pool.acquire() as conn:
        with contextlib.suppress(RuntimeError):
            async with conn.transaction():
                await EMITTER.emit(conn, code_event(9999, "adv_x"), tenant_id="t", key="adv_x")
                raise RuntimeError("roll back")
        for i in range(200):
            async with conn.transaction():
                await EMITTER.emit(
                    conn, code_event(i, f"adv_{i % 5}"), tenant_id="t", key=f"adv_{i % 5}"
                )

    relay = OutboxRelay(
        dsn=namespace.database_url,
        schema=SCHEMA,
        producer=producer,
        topic_prefix=namespace.topic_prefix,
        batch_size=64,
        poll_interval=0.2,
    )
    async with running(relay):

        async def drained() -> bool:
            async with pool.acquire() as conn:
                return (await outbox_stats(conn)).backlog == 0

        await eventually(drained)

    records = await read_to_end(namespace.kafka_bootstrap_servers, topic)
    codes = [CloudEvent.from_json(r.value).data["code"] for r in records]
    assert len(codes) == 200 and "C9999" not in codes
    for adv in range(5):
        mine = [
            int(CloudEvent.from_json(r.value).data["code"][1:])
            for r in records
            if r.key == f"adv_{adv}".encode()
        ]
        assert mine == sorted(mine) and len(mine) == 40


async def test_inbox_applies_each_event_once_and_dead_letters_poison(env, namespace) -> None:
    pool, producer = env
    topic = namespace.topic_prefix + LINK_EVENTS

    async def apply(conn: asyncpg.Connection, event: CloudEvent, payload: CodeCreated) -> None:
        if payload.code == "C0013":
            raise ValueError("this one always fails")
        await conn.execute("INSERT INTO applied VALUES ($1, $2)", event.id, payload.code)

    events = [new_event(code_event(i, "adv_1"), source="/t", tenant_id="t") for i in range(30)]
    for e in events + events[:10]:  # ten redelivered
        await producer.send_and_wait(topic, e.to_json(), key=b"adv_1")
    await producer.send_and_wait(topic, b"not json at all", key=b"adv_1")

    consumer = InboxConsumer(
        name="libtest-consumer",
        group_id=namespace.topic_prefix + "libtest-consumer",
        topics=[topic],
        handlers={CodeCreated.TYPE: apply},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        max_attempts=3,
        retry_base_seconds=0.01,
    )
    async with running(consumer):
        await wait_caught_up(
            namespace.kafka_bootstrap_servers, [namespace.topic_prefix + "libtest-consumer"]
        )
    async with pool.acquire() as conn:
        applied = await conn.fetchval("SELECT count(*) FROM applied")
        inbox = await conn.fetchval("SELECT count(*) FROM inbox")
    assert applied == 29 and inbox == 29
    assert consumer.duplicates == 10 and consumer.dead_lettered == 2

    dead = await read_topic(namespace.kafka_bootstrap_servers, dlq(topic), lambda rs: len(rs) >= 2)
    errors = sorted(dict(r.headers)["dlq.error"].decode()[:20] for r in dead)
    assert any("ValueError" in e for e in errors)
    assert any("PoisonMessage" in e for e in errors)

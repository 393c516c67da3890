"""The inbox consumer drops an event naming an erased person (a tombstone of its identifiers in
the service's `privacy_tombstones`) before its handler runs, one at a time and in a batched run,
while the others are applied; a tombstone written after the consumer started is in force within
the refresh period (referral_events.privacy)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.pytest_plugin import Namespace
from devstack.testing import wait_caught_up
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated, LinkClicked
from referral_events.inbox import Batched, InboxConsumer
from referral_events.privacy import TOMBSTONES_SQL_V1, Tombstones, digest, record
from referral_events.topics import LINK_EVENTS

pytestmark = pytest.mark.integration
SCHEMA = "tombtest"
KEY = b"test-privacy-key"


@pytest.fixture
async def env(scratch_schema: Any) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    tables = [TOMBSTONES_SQL_V1, "CREATE TABLE applied (event_id text PRIMARY KEY, who text)"]
    async with scratch_schema(SCHEMA, tables, [LINK_EVENTS], partitions=2) as env:
        yield env


def _code(advocate: str, i: int) -> CloudEvent:
    payload = CodeCreated(code=f"C{i}", advocate_id=advocate, program_id="prg")
    return new_event(payload, source="/t", tenant_id="t1")


def _click(advocate: str, i: int) -> CloudEvent:
    payload = LinkClicked(
        click_id=f"clk_{advocate}_{i}",
        code="C",
        advocate_id=advocate,
        program_id="prg",
        clicked_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
    )
    return new_event(payload, source="/t", tenant_id="t1")


async def _consume(
    namespace: Namespace, pool: asyncpg.Pool, producer: AIOKafkaProducer, group: str
) -> InboxConsumer:
    async def apply(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        await conn.execute("INSERT INTO applied VALUES ($1, $2)", event.id, payload.advocate_id)

    async def apply_run(conn: asyncpg.Connection, run: Sequence[tuple[CloudEvent, Any]]) -> None:
        for event, payload in run:
            await apply(conn, event, payload)

    consumer = InboxConsumer(
        name=group,
        group_id=namespace.topic_prefix + group,
        topics=[namespace.topic_prefix + LINK_EVENTS],
        handlers={CodeCreated.TYPE: apply, LinkClicked.TYPE: Batched(apply_run)},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        tombstones=Tombstones(KEY, max_age=0.1),
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_caught_up(namespace.kafka_bootstrap_servers, [namespace.topic_prefix + group])
    finally:
        await consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
    return consumer


async def test_events_naming_an_erased_person_are_dropped(env, namespace) -> None:
    pool, producer = env
    topic = namespace.topic_prefix + LINK_EVENTS
    async with pool.acquire() as conn:
        await record(conn, "prq_1", [digest(KEY, "t1", "advocate", "adv_gone")])
    for i in range(5):
        for advocate in ("adv_gone", "adv_kept"):
            await producer.send_and_wait(topic, _code(advocate, i).to_json(), key=b"k")
            await producer.send_and_wait(topic, _click(advocate, i).to_json(), key=b"k")
    # the same advocate id in another workspace is another person
    other = new_event(
        CodeCreated(code="X", advocate_id="adv_gone", program_id="p"), source="/t", tenant_id="t2"
    )
    await producer.send_and_wait(topic, other.to_json(), key=b"k")

    consumer = await _consume(namespace, pool, producer, "tomb-a")
    async with pool.acquire() as conn:
        applied = await conn.fetch("SELECT who, count(*) AS n FROM applied GROUP BY who")
    assert {r["who"]: r["n"] for r in applied} == {"adv_kept": 10, "adv_gone": 1}
    assert consumer.outcomes[("erased", CodeCreated.TYPE)] == 5
    assert consumer.outcomes[("erased", LinkClicked.TYPE)] == 5


async def test_a_tombstone_is_read_without_a_query_per_event(env, namespace) -> None:
    pool, _ = env
    tombstones = Tombstones(KEY, max_age=60)
    await tombstones.refresh(pool)
    assert not tombstones.erased("t1", {"customer_id": "cus_1"})
    async with pool.acquire() as conn:
        await record(conn, "prq_2", [digest(KEY, "t1", "customer", "cus_1")])
    await tombstones.refresh(pool)  # within max_age: not read again
    assert not tombstones.erased("t1", {"customer_id": "cus_1"})
    await tombstones.refresh(pool, force=True)
    assert tombstones.erased("t1", {"friend_customer_id": "cus_1"})
    assert tombstones.erased("t1", {"holder_id": "cus_1"})
    assert not tombstones.erased("t2", {"customer_id": "cus_1"})

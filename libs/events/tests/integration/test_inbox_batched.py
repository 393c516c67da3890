"""Batched handlers (issue #24: clicks taken in set-wise): an unbroken run of a batched type
from one fetch is handled in one transaction; repeats inside the run and across runs are
dropped by the inbox; a run that fails together is retried one by one, so a poison event is
dead-lettered alone and the rest applied once; other types keep their place in the order."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.pytest_plugin import Namespace
from devstack.testing import read_topic, running, wait_caught_up
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated, LinkClicked
from referral_events.inbox import Batched, BatchHandler, InboxConsumer
from referral_events.kafka import ensure_topics
from referral_events.topics import LINK_CLICKS, Topic, dlq

pytestmark = pytest.mark.integration
SCHEMA = "libbatch"


@pytest.fixture
async def env(scratch_schema: Any) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    table = "CREATE TABLE applied (seq bigserial, event_id text UNIQUE, what text, run integer)"
    async with scratch_schema(SCHEMA, [table], [LINK_CLICKS], partitions=1) as env:
        yield env


def clicked(i: int) -> LinkClicked:
    return LinkClicked(
        click_id=f"clk_{i:04d}",
        code="ANN123",
        advocate_id="adv_1",
        program_id="prg_1",
        clicked_at="2026-12-01T00:00:00Z",  # type: ignore[arg-type]
    )


async def code(conn: asyncpg.Connection, event: CloudEvent, payload: CodeCreated) -> None:
    """The plain handler between the clicks: its event is recorded in its place."""
    await conn.execute("INSERT INTO applied (event_id, what) VALUES ($1, $2)", event.id, "code")


def consumer_of(
    namespace: Namespace,
    env: tuple[asyncpg.Pool, AIOKafkaProducer],
    name: str,
    topic: str,
    clicks: BatchHandler,
    **options: Any,
) -> InboxConsumer:
    """A consumer of `topic` taking clicks in runs (`clicks`) and code events one by one."""
    pool, producer = env
    return InboxConsumer(
        name=name,
        group_id=namespace.topic_prefix + name,
        topics=[topic],
        handlers={LinkClicked.TYPE: Batched(clicks), CodeCreated.TYPE: code},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        **options,
    )


async def test_runs_are_applied_together_once_in_order(env, namespace) -> None:
    pool, producer = env
    topic = namespace.topic_prefix + LINK_CLICKS
    runs = 0

    async def clicks(conn: asyncpg.Connection, items: Sequence[tuple[CloudEvent, Any]]) -> None:
        nonlocal runs
        runs += 1
        if any(p.click_id == "clk_0003" for _, p in items):
            raise ValueError("this one always fails")
        await conn.executemany(
            "INSERT INTO applied (event_id, what, run) VALUES ($1, $2, $3)",
            [(e.id, p.click_id, runs) for e, p in items],
        )

    events = [new_event(clicked(i), source="/t", tenant_id="t") for i in range(60)]
    sent = events[:40] + events[5:15] + events[40:]  # ten repeats inside the first burst
    tail = events[50:]
    random.Random(7).shuffle(tail)  # and the last ten reordered
    sent = sent[:-10] + tail
    marker = new_event(
        CodeCreated(code="C1", advocate_id="adv_1", program_id="prg_1"), source="/t", tenant_id="t"
    )
    for e in sent[:30]:
        await producer.send(topic, e.to_json(), key=b"k")
    await producer.send(topic, marker.to_json(), key=b"k")  # a plain handler between runs
    for e in sent[30:]:
        await producer.send(topic, e.to_json(), key=b"k")
    await producer.flush()

    consumer = consumer_of(
        namespace, env, "batched", topic, clicks, max_attempts=2, retry_base_seconds=0.01
    )
    async with running(consumer):
        await wait_caught_up(
            namespace.kafka_bootstrap_servers, [namespace.topic_prefix + "batched"]
        )
    # every click once but the poison one; the code event between the two runs in its place
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT what, run FROM applied ORDER BY seq")
        inbox = await conn.fetchval("SELECT count(*) FROM inbox")
    what = [r["what"] for r in rows]
    assert sorted(w for w in what if w != "code") == sorted(
        f"clk_{i:04d}" for i in range(60) if i != 3
    )
    assert what.count("code") == 1
    assert what.index("code") == 29  # 30 clicks before it, clk_0003 among them (dead-lettered)
    assert inbox == 60  # 59 clicks and the code event: the failed one left no row
    assert consumer.duplicates == 10 and consumer.dead_lettered == 1
    # the run after the marker went through together (one transaction, one run number)
    after = [r["run"] for r in rows[what.index("code") + 1 :]]
    assert len(set(after)) == 1
    dead = await read_topic(namespace.kafka_bootstrap_servers, dlq(topic), lambda rs: len(rs) >= 1)
    assert CloudEvent.from_json(dead[0].value).data["click_id"] == "clk_0003"


async def test_a_polls_partitions_are_taken_in_as_one_run_each_in_its_order(env, namespace) -> None:
    """Clicks are spread by key over many partitions (link.clicks has 12): a poll's partitions
    that hold only clicks go through ONE transaction together (issue #24: one per fetched
    batch, not one per partition), each partition's records in their order; a partition with
    another event in it goes on its own, that event in its place."""
    pool, producer = env
    topic = namespace.topic_prefix + "many.clicks"
    await ensure_topics(
        namespace.kafka_bootstrap_servers,
        [Topic("many.clicks", 4, 3_600_000), Topic(dlq("many.clicks"), 1, 3_600_000)],
        prefix=namespace.topic_prefix,
    )
    runs: list[list[str]] = []

    async def clicks(conn: asyncpg.Connection, items: Sequence[tuple[CloudEvent, Any]]) -> None:
        runs.append([e.id for e, _ in items])
        await conn.executemany(
            "INSERT INTO applied (event_id, what, run) VALUES ($1, $2, $3)",
            [(e.id, p.click_id, len(runs)) for e, p in items],
        )

    partition_of: dict[str, int] = {}
    sent_order: dict[int, list[str]] = {}
    marker = new_event(
        CodeCreated(code="C1", advocate_id="adv_1", program_id="prg_1"), source="/t", tenant_id="t"
    )
    for i in range(200):
        if i == 100:
            meta = await (await producer.send(topic, marker.to_json(), key=b"k", partition=0))
            sent_order.setdefault(meta.partition, []).append(marker.id)
        e = new_event(clicked(i), source="/t", tenant_id="t")
        meta = await (await producer.send(topic, e.to_json(), key=b"k", partition=i % 4))
        partition_of[e.id] = meta.partition
        sent_order.setdefault(meta.partition, []).append(e.id)

    consumer = consumer_of(namespace, env, "many", topic, clicks)
    async with running(consumer):
        await wait_caught_up(namespace.kafka_bootstrap_servers, [namespace.topic_prefix + "many"])
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM applied ORDER BY seq")
        inbox = await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'many'")
    applied = [r["event_id"] for r in rows]
    assert len(applied) == len(set(applied)) == 201 and inbox == 201
    # each partition's events were applied in the order they were sent, the code in its place
    for order in sent_order.values():
        assert [e for e in applied if e in set(order)] == order
    # and some run took in more than one partition's clicks in one transaction
    assert any(len({partition_of[e] for e in run}) > 1 for run in runs)

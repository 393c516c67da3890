"""Group commit for plain handlers (issue #24: the consumers' transaction per event): with
`group_commit`, a poll's events for plain handlers share one transaction, over partitions and
topics, each partition's events in their order; repeats are dropped by the inbox; a run that
fails together goes one by one, so a poison event is dead-lettered alone and the rest applied
once; a partition holding a privacy request goes record by record. Without it, one
transaction per event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.pytest_plugin import Namespace
from devstack.testing import read_topic, running, wait_caught_up
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated
from referral_events.contracts.privacy import PrivacyRequested
from referral_events.inbox import InboxConsumer
from referral_events.topics import dlq

pytestmark = pytest.mark.integration
SCHEMA = "libgroup"
TOPICS = ("group.one", "group.two")


@pytest.fixture
async def env(scratch_schema: Any) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    table = "CREATE TABLE applied (seq bigserial, event_id text, code text, tx bigint)"
    async with scratch_schema(SCHEMA, [table], TOPICS, partitions=3) as env:
        yield env


async def code(conn: asyncpg.Connection, event: CloudEvent, payload: CodeCreated) -> None:
    """A plain handler: the event and the transaction that applied it."""
    if payload.code == "BAD":
        raise ValueError("this one always fails")
    await conn.execute(
        "INSERT INTO applied (event_id, code, tx) VALUES ($1, $2, txid_current())",
        event.id,
        payload.code,
    )


async def privacy(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
    await conn.execute(
        "INSERT INTO applied (event_id, code, tx) VALUES ($1, 'privacy', txid_current())",
        event.id,
    )


def coded(name: str) -> CloudEvent:
    return new_event(
        CodeCreated(code=name, advocate_id="adv_1", program_id="prg_1"), source="/t", tenant_id="t"
    )


def consumer_of(
    namespace: Namespace,
    env: tuple[asyncpg.Pool, AIOKafkaProducer],
    name: str,
    **options: Any,
) -> InboxConsumer:
    pool, producer = env
    return InboxConsumer(
        name=name,
        group_id=namespace.topic_prefix + name,
        topics=[namespace.topic_prefix + t for t in TOPICS],
        handlers={CodeCreated.TYPE: code, PrivacyRequested.TYPE: privacy},
        pool=pool,
        bootstrap_servers=namespace.kafka_bootstrap_servers,
        dlq_producer=producer,
        max_attempts=2,
        retry_base_seconds=0.01,
        **options,
    )


async def send_spread(
    namespace: Namespace, producer: AIOKafkaProducer, events: list[CloudEvent]
) -> dict[tuple[str, int], list[str]]:
    """Each event to one of the six partitions in turn; the ids each partition got, in order."""
    sent: dict[tuple[str, int], list[str]] = {}
    for i, e in enumerate(events):
        topic, partition = TOPICS[i % 2], (i // 2) % 3
        await producer.send(
            namespace.topic_prefix + topic, e.to_json(), key=b"k", partition=partition
        )
        sent.setdefault((topic, partition), []).append(e.id)
    await producer.flush()
    return sent


async def caught_up(namespace: Namespace, group: str) -> None:
    await wait_caught_up(namespace.kafka_bootstrap_servers, [namespace.topic_prefix + group])


async def applied_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM applied ORDER BY seq")


async def test_a_polls_plain_events_share_a_transaction_in_their_order(env, namespace) -> None:
    pool, producer = env
    events = [coded(f"C{i:03d}") for i in range(60)]
    sent = await send_spread(namespace, producer, events)
    where = {e: tp for tp, ids in sent.items() for e in ids}
    for e in events[:6]:  # six repeats, each to its partition again
        topic, partition = where[e.id]
        await producer.send(
            namespace.topic_prefix + topic, e.to_json(), key=b"k", partition=partition
        )
    await producer.flush()

    consumer = consumer_of(namespace, env, "together", group_commit=True)
    async with running(consumer):
        await caught_up(namespace, "together")
    rows = await applied_rows(pool)
    applied = [r["event_id"] for r in rows]
    assert sorted(applied) == sorted(e.id for e in events)  # each once
    assert consumer.duplicates == 6 and consumer.processed == 60
    for order in sent.values():  # each partition's events in the order sent
        assert [e for e in applied if e in set(order)] == order
    # transactions took in events of more than one partition, of both topics
    by_tx: dict[int, set[tuple[str, int]]] = {}
    for r in rows:
        by_tx.setdefault(r["tx"], set()).add(where[r["event_id"]])
    assert len(by_tx) < len(rows)
    assert any(len({t for t, _ in where}) == 2 for where in by_tx.values())

    # a poison event in the next poll: the rest applied once, it alone dead-lettered
    more = [coded("BAD" if i == 4 else f"D{i:03d}") for i in range(12)]
    await send_spread(namespace, producer, more)
    consumer = consumer_of(namespace, env, "together", group_commit=True)  # the group again
    async with running(consumer):
        await caught_up(namespace, "together")
    rows = await applied_rows(pool)
    assert sorted(r["code"] for r in rows[60:]) == [f"D{i:03d}" for i in range(12) if i != 4]
    assert consumer.dead_lettered == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'together'") == 71
    dead = await read_topic(
        namespace.kafka_bootstrap_servers, dlq(namespace.topic_prefix + TOPICS[0]), lambda rs: rs
    )
    assert [CloudEvent.from_json(d.value).data["code"] for d in dead] == ["BAD"]


async def test_a_privacy_request_is_applied_on_its_own(env, namespace) -> None:
    """Its tombstones must be in force for the events after it: the partition holding it goes
    record by record, the request in a transaction of its own."""
    pool, producer = env
    request = new_event(
        PrivacyRequested(
            request_id="prq_1",
            kind="erasure",
            customer_ids=["cus_1"],
            requested_at="2026-12-01T00:00:00Z",  # type: ignore[arg-type]
        ),
        source="/t",
        tenant_id="t",
    )
    before, after = coded("B1"), coded("A1")
    for e in (before, request, after):
        await producer.send(namespace.topic_prefix + TOPICS[0], e.to_json(), key=b"k", partition=0)
    await producer.flush()
    consumer = consumer_of(namespace, env, "alone", group_commit=True)
    async with running(consumer):
        await caught_up(namespace, "alone")
    rows = await applied_rows(pool)
    assert [r["code"] for r in rows] == ["B1", "privacy", "A1"]
    assert len({r["tx"] for r in rows}) == 3


async def test_without_group_commit_each_event_has_its_transaction(env, namespace) -> None:
    pool, producer = env
    events = [coded(f"E{i:03d}") for i in range(24)]
    await send_spread(namespace, producer, events)
    consumer = consumer_of(namespace, env, "each")
    async with running(consumer):
        await caught_up(namespace, "each")
    rows = await applied_rows(pool)
    assert len(rows) == 24 and len({r["tx"] for r in rows}) == 24


async def test_each_event_of_a_run_continues_its_own_trace(env, namespace) -> None:
    """Sharing a transaction, each event still gets its consumer span, a child of the trace
    its producer sent in its headers."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _, producer = env
    parents: dict[str, tuple[int, int]] = {}
    for i in range(12):
        e = coded(f"T{i:03d}")
        trace_id, span_id = 0x1000 + i, 0x2000 + i
        parents[e.id] = (trace_id, span_id)
        header = f"00-{trace_id:032x}-{span_id:016x}-01".encode()
        await producer.send(
            namespace.topic_prefix + TOPICS[i % 2],
            e.to_json(),
            key=b"k",
            partition=i % 3,
            headers=[("traceparent", header)],
        )
    await producer.flush()
    consumer = consumer_of(namespace, env, "traced", group_commit=True)
    async with running(consumer):
        await caught_up(namespace, "traced")
    spans = {
        s.attributes["cloudevents.event_id"]: s
        for s in exporter.get_finished_spans()
        if s.kind == trace.SpanKind.CONSUMER
        and s.attributes
        and s.attributes.get("messaging.consumer.group.name") == "traced"
    }
    assert set(spans) == set(parents)
    for event_id, (trace_id, span_id) in parents.items():
        span = spans[event_id]
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == span_id
    shared = [(s.attributes or {}).get("messaging.batch.message_count", 1) for s in spans.values()]
    assert max(shared) > 1  # and they did share a transaction

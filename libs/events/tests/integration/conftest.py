"""What the inbox and outbox tests share: a scratch schema with the outbox and inbox tables
(and each test file's own), its topics, a pool on it and a producer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.pytest_plugin import Namespace
from referral_events.kafka import ensure_topics, make_producer
from referral_events.sql import OUTBOX_INBOX_V1, OUTBOX_INBOX_V2
from referral_events.topics import Topic, dlq

Scratch = Callable[..., AbstractAsyncContextManager[tuple[asyncpg.Pool, AIOKafkaProducer]]]


@pytest.fixture
def scratch_schema(namespace: Namespace) -> Scratch:
    """`scratch_schema(schema, sql, topics, *, partitions, server_settings)`: the schema with
    the outbox and inbox tables and `sql` after them; each of `topics` with `partitions` and
    its dead-letter topic; (pool on the schema, started producer)."""

    @contextlib.asynccontextmanager
    async def scratch(
        schema: str,
        sql: Sequence[str],
        topics: Sequence[str],
        *,
        partitions: int,
        server_settings: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
        conn = await asyncpg.connect(namespace.database_url)
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path TO {schema};")
        for statement in (OUTBOX_INBOX_V1, OUTBOX_INBOX_V2, *sql):
            await conn.execute(statement)
        await conn.close()
        await ensure_topics(
            namespace.kafka_bootstrap_servers,
            [Topic(t, partitions, 3_600_000) for t in topics]
            + [Topic(dlq(t), 1, 3_600_000) for t in topics],
            prefix=namespace.topic_prefix,
        )
        pool = await asyncpg.create_pool(
            namespace.database_url,
            server_settings={**(server_settings or {}), "search_path": schema},
        )
        producer = make_producer(namespace.kafka_bootstrap_servers, "libtest")
        await producer.start()
        try:
            yield pool, producer
        finally:
            await producer.stop()
            await pool.close()

    return scratch

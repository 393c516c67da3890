"""Helpers for tests that run services in-process against the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


def new_api_key(tenant_id: str) -> tuple[str, dict[str, Any]]:
    """A fresh key and the settings entry (hash only) that accepts it."""
    key = "rk_test_" + secrets.token_urlsafe(16)
    return key, {"tenant_id": tenant_id, "key_sha256": hashlib.sha256(key.encode()).hexdigest()}


async def migrate(database_url: str, schema: str, package: str) -> None:
    from servicekit.migrations import upgrade

    await asyncio.to_thread(upgrade, database_url, schema, package)


@asynccontextmanager
async def serve_in_process(app: FastAPI, api_key: str | None = None
                           ) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers=headers) as client:
            yield client


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Every record of `topic` from the beginning, read until `until(records)` holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} does not exist")
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met on {topic}; read {len(records)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2
                     ) -> Any:
    """Await `check()` until it returns a truthy value (or raises nothing), then return it."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last is not None:
        raise last
    raise TimeoutError("condition not met in time")

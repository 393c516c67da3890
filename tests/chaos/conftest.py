"""The chaos tests' world: a broker and a Postgres of their own (the tests stop them), the four
services as processes on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devstack import services
from devstack.kafka import KafkaBroker
from devstack.postgres import create_scratch_database, start_embedded
from devstack.testing import new_api_key

from .harness import READY_WITHIN_S, World, print_tracebacks


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    broker = KafkaBroker(tmp_path / "kafka")
    await asyncio.to_thread(broker.start)
    pg, admin = await asyncio.to_thread(start_embedded, tmp_path / "pg")
    dsn = await create_scratch_database(admin)
    key, entry = new_api_key("acme")
    cfg = services.StackConfig(
        database_url=dsn,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        api_keys=[entry],
        topic_prefix="chaos.",
        topic_partitions=4,
        fixed_ports=False,
        log_dir=tmp_path / "logs",
        extra_env={"OUTBOX_POLL_INTERVAL_SECONDS": "0.2"},
    )
    await asyncio.to_thread(services.migrate_here, cfg)
    running = services.start(cfg)
    w = World(tmp_path, broker, pg, dsn, cfg, {s.definition.name: s for s in running})
    w.injected["key"] = key
    try:
        await asyncio.to_thread(services.wait_ready, running, READY_WITHIN_S)
        yield w
    finally:
        await asyncio.to_thread(services.stop, list(w.running.values()))
        await asyncio.to_thread(w.broker.stop)
        w.pg.cleanup()
        print_tracebacks(tmp_path / "logs")

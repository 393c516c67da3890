"""What a service process owns besides its HTTP routes: the pool, the Kafka producer, the outbox
relay, its inbox consumers and any background workers; started and stopped in a fixed order so
shutdown loses nothing (consumers commit, the relay publishes what is committed, the producer
flushes)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from aiokafka.errors import KafkaConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from referral_events.inbox import Handler, InboxConsumer
from referral_events.kafka import (
    KafkaSecurity,
    RenewableProducer,
    check_credentials,
    ensure_topics,
    make_producer,
)
from referral_events.outbox import OutboxRelay
from referral_events.privacy import Tombstones
from servicekit.db import create_pool, transaction
from servicekit.settings import ServiceSettings

log = logging.getLogger(__name__)


class Worker(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group: its name (also the inbox's consumer column), topics and routing table.
    `group_commit`: a poll's events for plain handlers share one transaction (InboxConsumer);
    only for groups whose handlers lock nothing an API request locks in another order."""

    group: str
    topics: list[str]
    handlers: dict[str, Handler]
    group_commit: bool = False


@dataclass(frozen=True)
class Command:
    """A `<service> NAME ...` command beside serve, migrate and replay-dlq (servicekit.cli):
    `arguments` declares its arguments on its sub-parser, `run` does the work with the parsed
    arguments and the service's settings and returns the process's exit code."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, ServiceSettings], int]
    arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda _parser: None)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    schema: str
    package: str
    version: str = "0.1.0"
    consumers: list[ConsumerSpec] = field(default_factory=list)
    workers: Callable[[Runtime], list[Worker]] = field(default=lambda _rt: [])
    # False: pooled connections are released without asyncpg's session reset query, one round
    # trip less per transaction (see servicekit.db.create_pool for when that is safe).
    pool_reset_session: bool = True
    # Session settings of the pooled connections (e.g. plan_cache_mode), beside the schema.
    pool_server_settings: dict[str, str] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    # The consumer keeping the service's copy of the workspace API keys
    # (servicekit.keys.key_consumer), run like `consumers` but kept apart from the service's
    # own (`Runtime.key_copy`): a group of its own, so a revocation never waits behind them.
    key_copy: ConsumerSpec | None = None
    # How the service records when its workspace keys were last used (servicekit.keys.Recorder,
    # e.g. `usage_events(EVENTS)`): create_service_app runs a KeyUsage worker with it.
    key_usage: Callable[[asyncpg.Connection, Any], Awaitable[None]] | None = None

    def all_consumers(self) -> list[ConsumerSpec]:
        return [*self.consumers, *([self.key_copy] if self.key_copy is not None else [])]


class Runtime:
    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._producer: RenewableProducer | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[InboxConsumer] = []
        self.key_copy: InboxConsumer | None = None
        # Erased people, checked by every consumer (referral_events.privacy).
        self.tombstones = Tombstones(
            settings.privacy_hash_key.encode(),
            max_age=settings.privacy_tombstone_refresh_seconds,
        )
        self.workers: list[Worker] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.stopping = False
        # Set for a server process (`<service> serve`), never for apps built in a test process
        # (they would pin each other's garbage): see `_freeze_start_up_heap`.
        self.freeze_after_start = False

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("runtime not started")
        return self._pool

    @property
    def producer(self) -> RenewableProducer:
        """The dead letters' producer (renewed when its idempotent state breaks)."""
        if self._producer is None:
            raise RuntimeError("runtime not started")
        return self._producer

    def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return transaction(self.pool)

    async def open_pool(
        self,
        *,
        min_size: int,
        max_size: int,
        role: str | None = None,
        server_settings: dict[str, str] | None = None,
        across_tenants: bool = False,
    ) -> asyncpg.Pool:
        """A pool on the service's database and schema, like the service's own. `role` names its
        connections (application_name `<service>-<role>`); `server_settings` are laid over the
        spec's session settings; `across_tenants`: servicekit.db.create_pool. For a worker or a
        hot path that wants connections set apart (the caller closes the pool)."""
        return await create_pool(
            self.settings.database_url,
            schema=self.spec.schema,
            application_name=f"{self.spec.name}-{role}" if role else self.spec.name,
            min_size=min_size,
            max_size=max_size,
            reset_session=self.spec.pool_reset_session,
            server_settings={
                **self.settings.db_session_settings(),
                **self.spec.pool_server_settings,
                **(server_settings or {}),
            },
            across_tenants=across_tenants,
        )

    async def start(self) -> None:
        s = self.settings
        security = s.kafka_security()
        self._pool = await self.open_pool(min_size=s.db_pool_min_size, max_size=s.db_pool_max_size)
        # Kafka may come up after us (compose, rolling restarts): wait for it rather than crash.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((KafkaConnectionError, OSError)),
            wait=wait_exponential(multiplier=0.5, max=5),
            stop=stop_after_delay(120),
            reraise=True,
        ):
            with attempt:
                async with _credentials_checked(s.kafka_bootstrap_servers, security):
                    if s.kafka_create_topics:
                        await ensure_topics(
                            s.kafka_bootstrap_servers,
                            prefix=s.kafka_topic_prefix,
                            replication_factor=s.kafka_topic_replication_factor,
                            partitions=s.kafka_topic_partitions,
                            security=security,
                        )
                    producer = make_producer(s.kafka_bootstrap_servers, self.spec.name, security)
                    # The relay's own: it replaces it when its idempotent state breaks
                    # (OutboxRelay.run), which must not take the dead letters' producer along.
                    relay_producer = make_producer(
                        s.kafka_bootstrap_servers, self.spec.name, security
                    )
                    try:
                        await producer.start()
                        await relay_producer.start()
                    except BaseException:
                        await producer.stop()
                        await relay_producer.stop()
                        raise
                    self._producer = RenewableProducer(
                        producer,
                        lambda: make_producer(s.kafka_bootstrap_servers, self.spec.name, security),
                    )
        self.relay = OutboxRelay(
            dsn=s.database_url,
            schema=self.spec.schema,
            producer=relay_producer,
            topic_prefix=s.kafka_topic_prefix,
            batch_size=s.outbox_batch_size,
            poll_interval=s.outbox_poll_interval_seconds,
            linger=s.outbox_linger_seconds,
            max_attempts=s.outbox_max_attempts,
            retention_hours=s.outbox_keep_published_hours,
            server_settings=s.db_session_settings(),
            new_producer=lambda: make_producer(s.kafka_bootstrap_servers, self.spec.name, security),
        )
        self._spawn("outbox-relay", self.relay)
        if s.run_consumers:
            for c in self.spec.all_consumers():
                consumer = InboxConsumer(
                    name=c.group,
                    group_id=s.kafka_topic_prefix + c.group,
                    topics=[s.kafka_topic_prefix + t for t in c.topics],
                    handlers=c.handlers,
                    pool=self.pool,
                    bootstrap_servers=s.kafka_bootstrap_servers,
                    dlq_producer=self.producer,
                    max_attempts=s.consumer_max_attempts,
                    retention_days=s.inbox_retention_days,
                    security=security,
                    tombstones=self.tombstones,
                    group_commit=c.group_commit,
                    commit_interval_seconds=s.consumer_commit_interval_seconds,
                )
                if c is self.spec.key_copy:
                    self.key_copy = consumer
                else:
                    self.consumers.append(consumer)
                self._spawn(f"consumer:{c.group}", consumer)
        self.workers = self.spec.workers(self)
        for i, worker in enumerate(self.workers):
            self._spawn(f"worker:{type(worker).__name__}:{i}", worker)
        if self.freeze_after_start:
            _freeze_start_up_heap()

    def _spawn(self, name: str, runnable: Worker) -> None:
        self._tasks[id(runnable)] = asyncio.create_task(self._supervise(name, runnable), name=name)

    async def _supervise(self, name: str, runnable: Worker) -> None:
        while not self.stopping:
            try:
                await runnable.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; restarting in 1s", name)
                await asyncio.sleep(1)

    async def stop(self) -> None:
        self.stopping = True
        grace = self.settings.shutdown_grace_seconds
        # Inbound first (consumers commit what they handled), then workers, then the relay
        # publishes everything already committed, then the producer flushes.
        inbound = [*self.consumers, *([self.key_copy] if self.key_copy else []), *self.workers]
        cut_short = await self._stop_all(inbound, grace)
        if self.relay is not None:
            cut_short += await self._stop_all([self.relay], grace)
        if self.relay is not None:
            await self.relay.producer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()
        if cut_short:
            log.warning("%s stopped; %d task(s) were cancelled", self.spec.name, cut_short)
        else:
            log.info(
                "%s stopped cleanly: consumers committed, outbox published, producer flushed",
                self.spec.name,
            )

    async def _stop_all(self, runnables: list[Worker], grace: float) -> int:
        """Stop `runnables`, waiting up to `grace`; returns how many had to be cancelled."""
        for r in runnables:
            await r.stop()
        tasks = [self._tasks[id(r)] for r in runnables if id(r) in self._tasks]
        if not tasks:
            return 0
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            log.warning("%s did not stop within %ss; cancelling", task.get_name(), grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return len(pending)

    async def ready(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        dead = [t.get_name() for t in self._tasks.values() if t.done()]
        checks["background"] = "ok" if not dead else f"stopped: {', '.join(dead)}"
        if self.stopping:
            checks["lifecycle"] = "shutting down"
        ok = all(v == "ok" for v in checks.values())
        return ok, checks


@contextlib.asynccontextmanager
async def _credentials_checked(
    bootstrap_servers: str, security: KafkaSecurity
) -> AsyncIterator[None]:
    """A failed connection is retried (the brokers may not be up yet), unless the brokers refuse
    the service's credentials: then the start fails at once with KafkaCredentialsRefused."""
    try:
        yield
    except KafkaConnectionError:
        await check_credentials(bootstrap_servers, security)
        raise


def _freeze_start_up_heap() -> None:
    """Everything start-up allocated (modules, FastAPI, pydantic's validators, pools, parsers'
    tables) lives as long as the process: out of the collector's sight, a full collection
    scans only what came later instead of stalling every request in flight (measured: 30-140 ms
    pauses of the event loop before, a few ms after; 126 ms for attribution-service's heap)."""
    gc.collect()
    gc.freeze()

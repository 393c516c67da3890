"""Producer/consumer factories with the settings the guarantees rely on, and topic creation."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from referral_events.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    # Idempotent + acks=all: a retried send can neither duplicate nor reorder within a partition.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        request_timeout_ms=30_000,
    )


def make_consumer(bootstrap_servers: str, group_id: str, topics: Iterable[str]) -> AIOKafkaConsumer:
    # Offsets are committed by hand after the inbox transaction, never automatically.
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[Topic] = ALL_TOPICS,
    *,
    prefix: str = "",
    replication_factor: int = 1,
    partitions: int | None = None,
) -> None:
    """Create missing topics; existing ones are left as they are (partitions are ops' call)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=prefix + t.name,
                num_partitions=partitions or t.partitions,
                replication_factor=replication_factor,
                topic_configs={"retention.ms": str(t.retention_ms)},
            )
            for t in topics
            if prefix + t.name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by another service")
    finally:
        await admin.close()

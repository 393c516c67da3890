"""`<service> replay-dlq`: hand this service's dead letters back to the consumer that gave up on
them, once the cause is fixed.

Each message on `<topic>.dlq` names its consumer (`dlq.consumer`) and where it came from
(`dlq.source`). Replay goes through that consumer's own inbox path, so it applies at most once
(an event handled meanwhile is a duplicate and changes nothing), keeps the original trace
context, and a message that still fails goes back to the DLQ. Other services' dead letters on
the same DLQ are left alone, and nothing is re-published to the source topic, so no other
consumer group sees the event again.

Progress is a consumer group of its own (`<prefix><service>.dlq-replay`), committed as it
goes: the next run starts after what this one replayed. A run reads up to the end of each DLQ
as it was when the run started, so messages that fail again wait for the next run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from referral_events.inbox import InboxConsumer, dead_letter_consumer, from_dead_letter
from referral_events.kafka import check_credentials, make_consumer, make_producer
from referral_events.topics import dlq
from servicekit.db import act_for_all_tenants, create_pool
from servicekit.runtime import ServiceSpec
from servicekit.settings import ServiceSettings

# A run that makes no progress for this long stops (broker trouble): the next run resumes.
IDLE_TIMEOUT_SECONDS = 30.0


@dataclass
class ReplaySummary:
    outcomes: Counter[str] = field(default_factory=Counter)  # handled/duplicate/dead_lettered/...
    skipped: int = 0  # dead letters of other services' consumers
    seen: int = 0

    def describe(self) -> str:
        parts = [f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items())]
        return (
            f"{self.seen} dead letters read: "
            + (", ".join(parts) if parts else "none replayed")
            + f", {self.skipped} of other consumers skipped"
        )


async def replay_dead_letters(
    spec: ServiceSpec,
    settings: ServiceSettings,
    *,
    groups: list[str] | None = None,
    dry_run: bool = False,
) -> ReplaySummary:
    specs = [c for c in spec.all_consumers() if groups is None or c.group in groups]
    unknown = set(groups or ()) - {c.group for c in spec.all_consumers()}
    if unknown:
        raise ValueError(f"{spec.name} has no consumer group {sorted(unknown)}")
    summary = ReplaySummary()
    if not specs:
        return summary
    prefix = settings.kafka_topic_prefix
    # The consumers' handlers, as the running service's: its role, across tenants (each
    # event names its own).
    act_for_all_tenants()
    pool = await create_pool(
        settings.database_url,
        schema=spec.schema,
        application_name=f"{spec.name}-replay",
        min_size=1,
        max_size=2,
        server_settings=settings.db_session_settings(),
    )
    security = settings.kafka_security()
    producer = make_producer(settings.kafka_bootstrap_servers, f"{spec.name}-replay", security)
    reader = make_consumer(
        settings.kafka_bootstrap_servers,
        f"{prefix}{spec.name}.dlq-replay",
        security=security,
        client_id=f"{spec.name}-replay",
        max_poll_records=None,
    )
    try:
        await producer.start()
        await reader.start()
    except KafkaConnectionError:
        # a refused login says so (KafkaCredentialsRefused) rather than "Unable to bootstrap"
        await check_credentials(settings.kafka_bootstrap_servers, security)
        raise
    try:
        consumers = {
            c.group: InboxConsumer(
                name=c.group,
                group_id=prefix + c.group,
                topics=[prefix + t for t in c.topics],
                handlers=c.handlers,
                pool=pool,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                dlq_producer=producer,
                max_attempts=settings.consumer_max_attempts,
                security=security,
            )
            for c in specs
        }
        dlq_topics = sorted({prefix + dlq(t) for c in specs for t in c.topics})
        # Without a subscription the client's metadata covers every topic once refreshed.
        await reader._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in dlq_topics
            for p in sorted(reader.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return summary
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        last_progress = time.monotonic()
        while True:
            todo = [tp for tp in partitions if await reader.position(tp) < ends[tp]]
            if not todo:
                break
            if time.monotonic() - last_progress > IDLE_TIMEOUT_SECONDS:
                raise TimeoutError(f"no progress reading {todo}; run again to resume")
            batches = await reader.getmany(*todo, timeout_ms=1000, max_records=200)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    summary.seen += 1
                    consumer = consumers.get(dead_letter_consumer(record) or "")
                    if consumer is None:
                        summary.skipped += 1
                        continue
                    if dry_run:
                        summary.outcomes["would replay"] += 1
                        continue
                    summary.outcomes[await consumer.replay(from_dead_letter(record))] += 1
                if records and not dry_run:
                    await reader.commit({tp: min(records[-1].offset + 1, ends[tp])})
                last_progress = time.monotonic()
        return summary
    finally:
        await reader.stop()
        await producer.stop()
        await pool.close()

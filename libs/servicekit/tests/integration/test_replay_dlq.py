"""`<service> replay-dlq` on a real broker and database: dead letters go back through the
consumer that gave up on them once the cause is fixed, once; other consumers' dead letters stay;
a second run finds nothing new; a message that still fails is dead-lettered again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, read_to_end, running
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated
from referral_events.inbox import InboxConsumer
from referral_events.kafka import ensure_topics, make_producer
from referral_events.sql import OUTBOX_INBOX_V1
from referral_events.topics import LINK_EVENTS, Topic, dlq
from servicekit import rls
from servicekit.replay import replay_dead_letters
from servicekit.runtime import ConsumerSpec, ServiceSpec
from servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration
SCHEMA = "replaytest"
GROUP = "replay-consumer"


class Flaky:
    """A handler that fails while `broken`, for codes listed in `poison` always."""

    def __init__(self) -> None:
        self.broken = True
        self.poison: set[str] = set()

    async def __call__(self, conn: asyncpg.Connection, event: CloudEvent, payload: object) -> None:
        assert isinstance(payload, CodeCreated)
        if self.broken or payload.code in self.poison:
            raise RuntimeError(f"cannot handle {payload.code} yet")
        await conn.execute(
            "INSERT INTO applied (event_id, code) VALUES ($1, $2)", event.id, payload.code
        )


@pytest.fixture
async def env(namespace: Namespace) -> AsyncIterator[tuple[asyncpg.Pool, AIOKafkaProducer]]:
    conn = await asyncpg.connect(namespace.database_url)
    await conn.execute(f"CREATE SCHEMA {SCHEMA}; SET search_path TO {SCHEMA};")
    await conn.execute(OUTBOX_INBOX_V1)
    await conn.execute("CREATE TABLE applied (event_id text PRIMARY KEY, code text)")
    await conn.execute(rls.ENABLE)  # the command acts as the services' role, as they do
    await conn.close()
    await ensure_topics(
        namespace.kafka_bootstrap_servers,
        [Topic(LINK_EVENTS, 2, 3_600_000), Topic(dlq(LINK_EVENTS), 1, 3_600_000)],
        prefix=namespace.topic_prefix,
    )
    pool = await asyncpg.create_pool(
        namespace.database_url, server_settings={"search_path": SCHEMA}
    )
    producer = make_producer(namespace.kafka_bootstrap_servers, "replaytest")
    await producer.start()
    yield pool, producer
    await producer.stop()
    await pool.close()


def _event(code: str) -> CloudEvent:
    payload = CodeCreated(
        advocate_id="adv_1", program_id="prg_1", code=code, kind="random",
        link_url=f"https://go.example.com/r/{code}",
    )  # fmt: skip
    return new_event(payload, source="test", tenant_id="acme", subject="adv_1")


async def test_replay_hands_dead_letters_back_once(
    namespace: Namespace, env: tuple[asyncpg.Pool, AIOKafkaProducer]
) -> None:
    pool, producer = env
    pfx, kafka = namespace.topic_prefix, namespace.kafka_bootstrap_servers
    handler = Flaky()
    consumer = InboxConsumer(
        name=GROUP,
        group_id=pfx + GROUP,
        topics=[pfx + LINK_EVENTS],
        handlers={CodeCreated.TYPE: handler},
        pool=pool,
        bootstrap_servers=kafka,
        dlq_producer=producer,
        max_attempts=2,
        retry_base_seconds=0.01,
    )
    events = [_event(code) for code in ("AAAA1111", "BBBB2222", "CCCC3333")]
    for ev in events:
        await producer.send_and_wait(
            pfx + LINK_EVENTS, ev.to_json(), key=b"adv_1",
            headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        )  # fmt: skip
    # another service's consumer gave up on something too: not ours to replay
    other = [("dlq.consumer", b"someone-else"), ("dlq.source", f"{pfx}{LINK_EVENTS}/0/0".encode())]
    await producer.send_and_wait(
        pfx + dlq(LINK_EVENTS), _event("DDDD4444").to_json(), key=b"adv_1", headers=other
    )
    async with running(consumer):
        await eventually(lambda: consumer.dead_lettered == 3, timeout=60)

    spec = ServiceSpec(
        name="replaytest",
        schema=SCHEMA,
        package="replaytest",
        consumers=[ConsumerSpec(GROUP, [LINK_EVENTS], {CodeCreated.TYPE: handler})],
    )
    settings = ServiceSettings(**namespace.settings_env(), consumer_max_attempts=2)

    dry = await replay_dead_letters(spec, settings, dry_run=True)
    assert (dry.outcomes["would replay"], dry.skipped) == (3, 1)
    assert await pool.fetchval("SELECT count(*) FROM applied") == 0

    # The cause is fixed for two of the three; the third still fails and goes back to the DLQ.
    handler.broken = False
    handler.poison = {"CCCC3333"}
    first = await replay_dead_letters(spec, settings)
    assert (first.outcomes["handled"], first.outcomes["dead_lettered"], first.skipped) == (2, 1, 1)
    applied = await pool.fetch("SELECT event_id, code FROM applied ORDER BY code")
    assert [r["code"] for r in applied] == ["AAAA1111", "BBBB2222"]
    assert {r["event_id"] for r in applied} == {events[0].id, events[1].id}
    inbox = await pool.fetch("SELECT topic FROM inbox WHERE consumer = $1", GROUP)
    assert {r["topic"] for r in inbox} == {pfx + LINK_EVENTS}  # recorded under the source topic
    dead = await read_to_end(kafka, pfx + dlq(LINK_EVENTS))
    again = dead[-1]
    assert dict(again.headers)["dlq.consumer"] == GROUP.encode()
    assert dict(again.headers)["traceparent"].startswith(b"00-0af7651916cd43dd")
    assert sum(1 for k, _ in again.headers if k == "dlq.source") == 1

    # The next run starts after what the first one read: only the re-dead-lettered one.
    handler.poison = set()
    second = await replay_dead_letters(spec, settings)
    assert (second.outcomes["handled"], second.seen) == (1, 1)
    assert await pool.fetchval("SELECT count(*) FROM applied") == 3
    third = await replay_dead_letters(spec, settings)
    assert third.seen == 0

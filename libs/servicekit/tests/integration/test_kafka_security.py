"""Kafka with SASL/SCRAM and ACLs (docs/security.md), on a real broker started for this module:
a service's Runtime connects as its own SCRAM user and consumes and publishes through its outbox
with nothing but the permissions of the one table (referral_events.topics.ACCESS); a wrong
password fails the start at once with a clear error; attribution-service's user cannot write
link.events while link-service's can, which is why a consumer of link.events may trust the
envelope's tenant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from devstack.kafka import KafkaBroker, create_acls
from devstack.postgres import create_scratch_database
from devstack.pytest_plugin import Infra
from devstack.testing import eventually
from referral_events import CloudEvent, new_event
from referral_events.contracts.link import CodeCreated
from referral_events.emitter import Emitter
from referral_events.kafka import (
    KafkaCredentialsRefused,
    KafkaSecurity,
    ensure_topics,
    make_consumer,
    make_producer,
)
from referral_events.sql import OUTBOX_INBOX_V1, OUTBOX_INBOX_V2
from referral_events.topics import ACCESS, ALL_TOPICS, ATTRIBUTION_EVENTS, LINK_EVENTS, acls
from servicekit import rls
from servicekit.runtime import ConsumerSpec, Runtime, ServiceSpec
from servicekit.settings import ServiceSettings

pytestmark = pytest.mark.integration
PREFIX = "sec."
SCHEMA = "sectest"
USERS = {"admin": "admin-secret"} | {a.service: f"{a.service}-secret" for a in ACCESS}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(Path(tmp_path_factory.mktemp("kafka-sasl")), heap="512m", scram_users=USERS)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
async def secured(broker: KafkaBroker) -> KafkaBroker:
    """Topics created by the admin (services cannot create them), the table's ACLs applied."""
    await ensure_topics(
        broker.bootstrap_servers,
        ALL_TOPICS,
        prefix=PREFIX,
        partitions=1,
        security=broker.security(),
    )
    for access in ACCESS:
        await create_acls(
            broker.bootstrap_servers,
            broker.security(),
            f"User:{access.service}",
            acls(access, prefix=PREFIX),
        )
    return broker


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[str]:
    dsn = await create_scratch_database(infra.admin_database_url)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE SCHEMA {SCHEMA}; SET search_path TO {SCHEMA};")
    await conn.execute(OUTBOX_INBOX_V1)
    await conn.execute(OUTBOX_INBOX_V2)
    await conn.execute(rls.ENABLE)  # the service acts as its role, as every service does
    await conn.close()
    yield dsn


ATTRIBUTION = Emitter("attribution-service", ATTRIBUTION_EVENTS)


async def relay_code(conn: asyncpg.Connection, event: CloudEvent, payload: object) -> None:
    assert isinstance(payload, CodeCreated)
    await ATTRIBUTION.emit(conn, payload, tenant_id=event.tenantid, key=payload.advocate_id)


def spec() -> ServiceSpec:
    """A small service that connects as attribution-service: consumes link.events, publishes
    on attribution.events through its outbox."""
    return ServiceSpec(
        name="attribution-service",
        schema=SCHEMA,
        package="sectest",
        consumers=[
            ConsumerSpec("attribution-service", [LINK_EVENTS], {CodeCreated.TYPE: relay_code})
        ],
    )


def settings(broker: KafkaBroker, dsn: str, user: str, password: str) -> ServiceSettings:
    return ServiceSettings(
        database_url=dsn,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=PREFIX,
        kafka_create_topics=False,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username=user,
        kafka_sasl_password=password,  # type: ignore[arg-type]
    )


def code_created(code: str) -> CloudEvent:
    payload = CodeCreated(
        advocate_id="adv_1", program_id="prg_1", code=code, kind="random",
        link_url=f"https://go.example.com/r/{code}",
    )  # fmt: skip
    return new_event(payload, source="link-service", tenant_id="acme", subject="adv_1")


async def read_all(bootstrap: str, security: KafkaSecurity, topic: str) -> list[bytes]:
    reader = make_consumer(bootstrap, None, security=security, max_poll_records=None)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        values: list[bytes] = []
        while await reader.position(tp) < end:
            for records in (await reader.getmany(tp, timeout_ms=1000)).values():
                values.extend(r.value for r in records if r.value is not None)
        return values
    finally:
        await reader.stop()


async def test_a_service_consumes_and_publishes_over_scram_with_its_acls(
    secured: KafkaBroker, database: str
) -> None:
    bootstrap = secured.bootstrap_servers
    link = make_producer(bootstrap, "link-service", secured.security("link-service"))
    await link.start()
    event = code_created("SCRAM001")
    try:
        await link.send_and_wait(PREFIX + LINK_EVENTS, event.to_json(), key=b"adv_1")
    finally:
        await link.stop()

    rt = Runtime(
        spec(), settings(secured, database, "attribution-service", USERS["attribution-service"])
    )
    await rt.start()
    try:
        admin = secured.security()

        async def published() -> list[bytes]:
            return await read_all(bootstrap, admin, PREFIX + ATTRIBUTION_EVENTS)

        values = await eventually(published, timeout=60)
        relayed = CloudEvent.from_json(values[0])
        assert (relayed.type, relayed.tenantid) == (CodeCreated.TYPE, "acme")
        assert rt.consumers[0].processed == 1

        async def all_marked_published() -> bool:  # the relay marks its rows after the send
            unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            return bool(await rt.pool.fetchval(unpublished) == 0)

        assert await eventually(all_marked_published, timeout=10)
    finally:
        await rt.stop()


async def test_a_wrong_password_fails_the_start_at_once(
    secured: KafkaBroker, database: str
) -> None:
    rt = Runtime(spec(), settings(secured, database, "attribution-service", "not-the-password"))
    started = time.monotonic()
    with pytest.raises(KafkaCredentialsRefused, match="attribution-service"):
        await asyncio.wait_for(rt.start(), timeout=30)
    assert time.monotonic() - started < 15  # not the 120 s a broker that is down is waited for
    await rt.stop()


async def test_only_link_service_may_write_link_events(secured: KafkaBroker) -> None:
    """The trust model: a consumer of link.events trusts the envelope's tenant because no other
    service's user can put an event there."""
    bootstrap, topic = secured.bootstrap_servers, PREFIX + LINK_EVENTS
    forged = code_created("FORGED01")
    intruder = make_producer(
        bootstrap, "attribution-service", secured.security("attribution-service")
    )
    await intruder.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await intruder.send_and_wait(topic, forged.to_json(), key=b"adv_1")
    finally:
        await intruder.stop()

    owner = make_producer(bootstrap, "link-service", secured.security("link-service"))
    await owner.start()
    try:
        await owner.send_and_wait(topic, code_created("GENUINE1").to_json(), key=b"adv_1")
    finally:
        await owner.stop()
    codes = {
        CloudEvent.from_json(v).data["code"]
        for v in await read_all(bootstrap, secured.security(), topic)
    }
    assert "GENUINE1" in codes
    assert "FORGED01" not in codes

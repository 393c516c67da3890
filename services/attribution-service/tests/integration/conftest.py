"""The service in-process against real Kafka + Postgres, with link-service's events produced to
the topics as link-service would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from attribution_service.config import Settings
from attribution_service.main import create_app
from devstack import testing
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key, read_topic, serve_in_process
from referral_events import CloudEvent, EventPayload, new_event
from referral_events.contracts import link as ev

Publish = Callable[..., Awaitable[None]]


@dataclass
class Env:
    client: httpx.AsyncClient
    publish: Publish
    ns: Namespace
    other_key: str
    settings: Settings
    key: str = ""
    app: Any = None

    @property
    def foreign(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_key}"}

    async def events(self, until: Callable[[list[CloudEvent]], bool]) -> list[CloudEvent]:
        records = await read_topic(
            self.ns.kafka_bootstrap_servers,
            self.ns.topic_prefix + "attribution.events",
            lambda rs: until([CloudEvent.from_json(r.value) for r in rs]),
            timeout=60,
        )
        return [CloudEvent.from_json(r.value) for r in records]


@pytest.fixture(autouse=True)
def front_door(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """The apps' front door on, or off where a module runs its tests both ways
    (`pytestmark = devstack.testing.FRONT_AND_FASTAPI`); gives the routes it answered."""
    with testing.front_door(monkeypatch, getattr(request, "param", True)) as answered:
        yield answered


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def env(namespace: Namespace, settings_overrides: dict[str, Any]) -> AsyncIterator[Env]:
    await migrate(namespace.database_url, "attribution", "attribution_service")
    key, entry = new_api_key("acme")
    other_key, other_entry = new_api_key("globex")
    settings = Settings(
        **namespace.settings_env(),
        api_keys=[entry, other_entry],
        outbox_poll_interval_seconds=0.2,
        **settings_overrides,
    )
    producer = AIOKafkaProducer(bootstrap_servers=namespace.kafka_bootstrap_servers)
    await producer.start()
    app = create_app(settings)
    async with serve_in_process(app, key) as client:

        async def publish(
            topic: str,
            payload: EventPayload,
            tenant: str = "acme",
            event_id: str | None = None,
            time: datetime | None = None,
        ) -> None:
            event = new_event(
                payload, source="/test", tenant_id=tenant, event_id=event_id, time=time
            )
            await producer.send_and_wait(namespace.topic_prefix + topic, event.to_json(), key=b"k")

        yield Env(client, publish, namespace, other_key, settings, key, app)
    await producer.stop()


async def link_facts(
    publish: Publish,
    *,
    program: str = "prg_1",
    advocate: str = "adv_1",
    code: str = "ANN123",
    customer: str = "cus_adv",
    email: str | None = "ann.smith@gmail.com",
) -> None:
    await publish(
        "link.events",
        ev.ProgramCreated(
            program_id=program,
            name="p",
            status="active",
            landing_url="https://s.example",
            allowed_domains=["s.example"],
        ),
    )
    await publish(
        "link.events",
        ev.AdvocateEnrolled(
            advocate_id=advocate, program_id=program, customer_id=customer, email=email
        ),
    )
    await publish(
        "link.events", ev.CodeCreated(code=code, advocate_id=advocate, program_id=program)
    )


def click(
    click_id: str,
    *,
    advocate: str = "adv_1",
    program: str = "prg_1",
    ago: timedelta = timedelta(minutes=5),
    **kw: Any,
) -> ev.LinkClicked:
    return ev.LinkClicked(
        click_id=click_id,
        code="ANN123",
        advocate_id=advocate,
        program_id=program,
        clicked_at=datetime.now(UTC) - ago,
        **kw,
    )

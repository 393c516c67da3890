from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack import testing
from devstack.pytest_plugin import Namespace
from devstack.testing import migrate, new_api_key, read_to_end, read_topic, serve_in_process
from link_service.config import Settings
from link_service.main import create_app
from referral_events import CloudEvent


@dataclass
class LinkEnv:
    client: httpx.AsyncClient
    ns: Namespace
    other_key: str
    app: Any
    key: str
    entries: list[dict[str, Any]]

    @property
    def foreign(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_key}"}

    async def events(
        self, topic: str, until: Callable[[list[CloudEvent]], bool], wait: float = 60
    ) -> list[CloudEvent]:
        records = await read_topic(
            self.ns.kafka_bootstrap_servers,
            self.ns.topic_prefix + topic,
            lambda rs: until([CloudEvent.from_json(r.value) for r in rs]),
            timeout=wait,
        )
        return [CloudEvent.from_json(r.value) for r in records]

    async def all_events(self, topic: str) -> list[CloudEvent]:
        """Everything on the topic up to its end as of now."""
        records = await read_to_end(self.ns.kafka_bootstrap_servers, self.ns.topic_prefix + topic)
        return [CloudEvent.from_json(r.value) for r in records]

    def settings(self, **overrides: Any) -> Settings:
        return Settings(
            **{
                **self.ns.settings_env(),
                "api_keys": self.entries,
                "outbox_poll_interval_seconds": 0.2,
                "enrollment_poll_interval_seconds": 0.2,
                **overrides,
            }
        )


@pytest.fixture(autouse=True)
def front_door(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """The apps' front door on, or off where a module runs its tests both ways
    (`pytestmark = devstack.testing.FRONT_AND_FASTAPI`); gives the routes it answered."""
    with testing.front_door(monkeypatch, getattr(request, "param", True)) as answered:
        yield answered


@pytest.fixture
def link_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Per-test overrides of link-service settings (a test parametrizes it indirectly)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def env(namespace: Namespace, link_settings: dict[str, Any]) -> AsyncIterator[LinkEnv]:
    await migrate(namespace.database_url, "link", "link_service")
    key, entry = new_api_key("acme")
    other_key, other_entry = new_api_key("globex")
    entries = [entry, other_entry]
    settings = Settings(
        **namespace.settings_env(),
        api_keys=entries,
        outbox_poll_interval_seconds=0.2,
        enrollment_poll_interval_seconds=0.2,
        **link_settings,
    )
    app = create_app(settings)
    async with serve_in_process(app, key) as client:
        yield LinkEnv(client, namespace, other_key, app, key, entries)

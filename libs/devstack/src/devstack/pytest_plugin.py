"""pytest fixtures for integration and e2e tests: one real Kafka broker and one real Postgres per
test session (started only when a test asks for them), and an isolated namespace per test: a
fresh database and a topic prefix, so tests never see each other's rows or events."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.kafka import KafkaBroker
from devstack.postgres import create_scratch_database, start_embedded
from devstack.services import StackConfig


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap_servers: str
    admin_database_url: str


@dataclass(frozen=True)
class Namespace:
    """What one test owns: its database and its topic/consumer-group prefix."""

    kafka_bootstrap_servers: str
    database_url: str
    topic_prefix: str

    def settings_env(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "kafka_topic_prefix": self.topic_prefix,
            "kafka_topic_partitions": 2,
            # Tests run with the dev defaults of secret keys (servicekit.settings).
            "environment": "dev",
        }

    def stack_config(
        self, api_keys: list[dict[str, object]], log_dir: Path, **extra_env: str
    ) -> StackConfig:
        """The services as real processes in this namespace, on free ports."""
        return StackConfig(
            database_url=self.database_url,
            kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            api_keys=api_keys,
            topic_prefix=self.topic_prefix,
            topic_partitions=2,
            fixed_ports=False,
            log_dir=log_dir,
            extra_env=extra_env,
        )


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root: Path = tmp_path_factory.mktemp("devstack")
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = KafkaBroker(root / "kafka")
        broker.start()
        bootstrap = broker.bootstrap_servers
    pg = None
    admin_dsn = os.environ.get("DATABASE_URL")
    if not admin_dsn:
        pg, admin_dsn = start_embedded(root / "pg")
    try:
        yield Infra(bootstrap, admin_dsn)
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.cleanup()


@pytest.fixture
async def namespace(infra: Infra) -> AsyncIterator[Namespace]:
    dsn = await create_scratch_database(infra.admin_database_url)
    yield Namespace(infra.kafka_bootstrap_servers, dsn, f"t{secrets.token_hex(4)}.")

"""The four services as real processes: migrate, start, wait for readiness, stop with SIGTERM.
Used by `devstack up` and by the end-to-end tests, so both exercise the same start-up path.
`replica=N` (N >= 1) starts another instance of a service beside the first: its own port and log
file, the same database schema, topics and consumer groups (a replica as a deployment runs it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.paths import free_port


@dataclass(frozen=True)
class ServiceDef:
    name: str
    package: str
    default_port: int

    @property
    def schema(self) -> str:
        """Its Postgres schema: the package's name without `_service`."""
        return self.package.removesuffix("_service")


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("link-service", "link_service", 8001),
    ServiceDef("attribution-service", "attribution_service", 8002),
    ServiceDef("reward-service", "reward_service", 8003),
    ServiceDef("notification-service", "notification_service", 8004),
)


@dataclass
class StackConfig:
    database_url: str
    kafka_bootstrap_servers: str
    api_keys: list[dict[str, object]]
    topic_prefix: str = ""
    topic_partitions: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    fixed_ports: bool = True

    def port(self, svc: ServiceDef, replica: int = 0) -> int:
        """The service's port; a replica past the first always gets a free one."""
        if replica:
            return self.ports.setdefault(f"{svc.name}#{replica}", free_port())
        return self.ports.setdefault(
            svc.name, svc.default_port if self.fixed_ports else free_port()
        )

    def env(self, svc: ServiceDef, replica: int = 0) -> dict[str, str]:
        port = self.port(svc, replica)
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "API_KEYS": json.dumps(self.api_keys),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.5",
            # Local runs and tests keep the dev defaults of secret keys (servicekit.settings).
            "ENVIRONMENT": "dev",
            # Local runs deliver webhooks to loopback receivers over http.
            "WEBHOOK_ALLOW_HTTP": "true",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            # Holds are whole days: local runs and tests may move reward-service's clock
            # (POST /v1/dev/clock/advance; refused outside ENVIRONMENT=dev).
            "DEV_CLOCK_CONTROL": "true",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port(SERVICES[0])}",
            **self.extra_env,
        }
        if self.topic_partitions:
            env["KAFKA_TOPIC_PARTITIONS"] = str(self.topic_partitions)
        return env


@dataclass
class RunningService:
    definition: ServiceDef
    port: int
    process: subprocess.Popen[bytes]
    replica: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def migrate(cfg: StackConfig, services: tuple[ServiceDef, ...] = SERVICES) -> None:
    for svc in services:
        subprocess.run(
            [sys.executable, "-m", f"{svc.package}.main", "migrate"],
            env=cfg.env(svc),
            check=True,
        )


def migrate_here(cfg: StackConfig, services: tuple[ServiceDef, ...] = SERVICES) -> None:
    """The upgrade `<service> migrate` runs (servicekit.migrations.upgrade, on each service's
    schema), in this process: the tests' stacks, about 3 s for all four instead of 20+ s for
    four interpreter starts. `make up` and the README test keep the command itself."""
    from servicekit.migrations import upgrade

    for svc in services:
        upgrade(cfg.database_url, svc.schema, svc.package)


def start(
    cfg: StackConfig, services: tuple[ServiceDef, ...] = SERVICES, *, replica: int = 0
) -> list[RunningService]:
    running = []
    for svc in services:
        out = None
        if cfg.log_dir is not None:
            cfg.log_dir.mkdir(parents=True, exist_ok=True)
            name = f"{svc.name}-{replica}" if replica else svc.name
            out = open(cfg.log_dir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", f"{svc.package}.main", "serve"],
            env=cfg.env(svc, replica),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        running.append(RunningService(svc, cfg.port(svc, replica), proc, replica))
    return running


def wait_ready(running: list[RunningService], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for svc in running:
        while True:
            if svc.process.poll() is not None:
                raise RuntimeError(f"{svc.definition.name} exited with {svc.process.returncode}")
            try:
                if httpx.get(f"{svc.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{svc.definition.name} not ready within {timeout}s")
            time.sleep(0.2)


def stop(running: list[RunningService], timeout: float = 30.0) -> None:
    for svc in running:
        if svc.process.poll() is None:
            svc.process.send_signal(signal.SIGTERM)
    for svc in running:
        try:
            svc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()

"""What the chaos tests share: the world they break (a broker, a Postgres and the four services
as processes, all of the suite's own), the client's retry, the program every test rewards
purchases under, and the dead-letter count."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from devstack import services
from devstack.kafka import KafkaBroker
from devstack.postgres import start_embedded
from devstack.testing import eventually, read_to_end

REWARD_MINOR = 100
# the consumer groups the pipeline's work goes through (each service's main group)
CONSUMER_GROUPS = ["attribution-service", "reward-service", "notification-service"]
# generous: a loaded 2-core machine takes minutes to import several services at once
READY_WITHIN_S = 300


@dataclass
class World:
    """What the harness controls: the broker, Postgres, the four processes."""

    root: Path
    broker: KafkaBroker
    pg: Any
    dsn: str
    cfg: services.StackConfig
    running: dict[str, services.RunningService]
    injected: dict[str, Any] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.running[name].url

    async def kill9_and_restart(self, name: str) -> None:
        old = self.running[name]
        old.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(old.process.wait)
        # on a port of its own: the killed one's may not be free again yet
        self.cfg.ports.pop(name, None)
        [new] = services.start(self.cfg, (old.definition,))
        self.running[name] = new
        await asyncio.to_thread(services.wait_ready, [new], READY_WITHIN_S)
        self.injected.setdefault("kill9", []).append(name)

    async def broker_down(self, seconds: float) -> tuple[float, float]:
        """The broker stopped, `seconds` away, started again on the same port and log; gives
        when (monotonic) it was down and when its start began."""
        await asyncio.to_thread(self.broker.stop)
        down = time.monotonic()
        await asyncio.sleep(seconds)
        up = time.monotonic()
        await asyncio.to_thread(self.broker.start)
        return down, up

    async def postgres_down(self, seconds: float) -> tuple[float, float]:
        """Postgres stopped, `seconds` away, started again on the same data directory; gives
        when (monotonic) it was down and when its start began."""
        await asyncio.to_thread(self.pg.cleanup)
        down = time.monotonic()
        await asyncio.sleep(seconds)
        up = time.monotonic()
        self.pg, _ = await asyncio.to_thread(start_embedded, self.root / "pg")
        return down, up

    async def restart_broker(self) -> None:
        await self.broker_down(2)
        self.injected["broker_restarts"] = self.injected.get("broker_restarts", 0) + 1

    async def restart_postgres(self) -> None:
        await self.postgres_down(2)
        self.injected["postgres_restarts"] = self.injected.get("postgres_restarts", 0) + 1


def print_tracebacks(log_dir: Path) -> None:
    """The end of each service log that shows a traceback (pytest shows it on failure)."""
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            print(f"--- {log.name}\n{text[-3000:]}")


async def until_ok(
    call: Callable[[], Awaitable[httpx.Response]],
    what: str,
    within: float = 180,
    seen: Callable[[httpx.Response | None, float, str], None] | None = None,
) -> httpx.Response:
    """The client's retry: the same request (same Idempotency-Key) until a service answers
    below 500 and not 429, as an integrator's client does: after a 429 (the key's rate limit:
    a backlog sent at once when an outage ends) it waits the answer's Retry-After. `seen` is
    told each answer (None: no answer, with the client's error), and how long it took."""
    deadline = time.monotonic() + within
    while True:
        sent = time.monotonic()
        r: httpx.Response | None = None
        error = ""
        try:
            r = await call()
        except httpx.HTTPError as exc:
            error = repr(exc)
        if seen is not None:
            seen(r, time.monotonic() - sent, error)
        if r is not None and r.status_code < 500 and r.status_code != 429:
            return r
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        wait = 0.5
        if r is not None and r.status_code == 429:
            wait = max(wait, float(r.headers.get("retry-after") or 1))
        await asyncio.sleep(wait)


@dataclass
class Program:
    id: str
    advocates: list[tuple[str, str]] = field(default_factory=list)  # (advocate id, code)

    @property
    def codes(self) -> list[str]:
        return [code for _, code in self.advocates]


async def create_program(http: httpx.AsyncClient, link: str, advocates: int) -> Program:
    r = await http.post(
        f"{link}/v1/programs", json={"name": "chaos", "landing_url": "https://s.example"}
    )
    assert r.status_code == 201, r.text
    program = Program(r.json()["id"])
    for i in range(advocates):
        r = await http.post(
            f"{link}/v1/programs/{program.id}/advocates", json={"customer_id": f"cus_adv_{i}"}
        )
        assert r.status_code == 201, r.text
        program.advocates.append((r.json()["id"], r.json()["code"]))
    return program


async def rewarded_program(
    http: httpx.AsyncClient, link: str, attribution: str, reward: str, advocates: int
) -> Program:
    """A program whose every first purchase earns its advocate REWARD_MINOR cents, fraud checks
    off (the tests' purchases come fast from one address), with `advocates` advocates whose
    codes attribution knows when this returns."""
    program = await create_program(http, link, advocates)
    r = await http.put(
        f"{reward}/v1/programs/{program.id}/reward-rule",
        json={
            "advocate_reward": {"amount_minor": REWARD_MINOR, "currency": "USD"},
            "trigger": "first_purchase",
        },
    )
    assert r.status_code == 200, r.text
    r = await http.put(
        f"{attribution}/v1/programs/{program.id}/attribution-settings",
        json={"fraud": {"too_fast": {"enabled": False}, "velocity": {"enabled": False}}},
    )
    assert r.status_code == 200, r.text

    async def code_known() -> bool:  # the last code has reached attribution's copy
        r = await http.post(
            f"{attribution}/v1/conversions",
            json={"type": "signup", "customer_id": "cus_probe", "code": program.codes[-1]},
        )
        return r.status_code in (200, 201) and r.json()["status"] == "attributed"

    await eventually(code_known, timeout=120)
    return program


def purchase(n: int, code: str) -> dict[str, str]:
    """Purchase `n`: its friend's first, so it earns one reward (order id `ord_<n>`)."""
    return {
        "type": "purchase",
        "customer_id": f"cus_friend_{n}",
        "order_id": f"ord_{n}",
        "amount": "10.00",
        "currency": "USD",
        "code": code,
    }


async def dead_letters(bootstrap: str, prefix: str) -> dict[str, int]:
    """Every dead-letter topic under `prefix` and how many records it holds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()
    return {t: len(await read_to_end(bootstrap, t)) for t in topics if t.endswith(".dlq")}

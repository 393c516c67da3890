"""The chaos suite: conversions pushed through the four services, each a real process, on a
broker and a Postgres of the suite's own, while the harness injects faults: the broker killed
and restarted once, each service kill -9'd (and restarted) once, Postgres restarted once, 10% of
the consumed events delivered again and 5% delivered again out of order. Then: exactly the
expected rewards, a clean ledger verify, every expected webhook delivered once to the endpoint
(by id), nothing in a dead-letter topic; one JSON line says what was injected and found.

CI profile: CHAOS_CONVERSIONS=1000 (the default); the long one: `make chaos` (10,000)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.testing import eventually, http_receiver, read_to_end, wait_caught_up

from .harness import CONSUMER_GROUPS, World, dead_letters, purchase, rewarded_program, until_ok

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(1800)]

CONVERSIONS = int(os.environ.get("CHAOS_CONVERSIONS", "1000"))
ADVOCATES = max(10, CONVERSIONS // 10)
CONCURRENCY = 16
SEED = int(os.environ.get("CHAOS_SEED", "21"))
CONSUMED = ["link.events", "attribution.events", "reward.events"]


@dataclass
class Receiver:
    ids: list[str] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        await request.body()
        self.ids.append(request.headers["webhook-id"])
        return Response(status_code=204)


async def _redeliver(world: World, share: float, reorder: bool, rng: random.Random) -> int:
    """Produce `share` of the consumed topics' records again (same key, value, headers): what a
    relay crash before marking or a consumer crash before committing causes; `reorder`: the
    picked records go out newest first, each arriving after later events of its key."""
    producer = AIOKafkaProducer(bootstrap_servers=world.broker.bootstrap_servers)
    await producer.start()
    count = 0
    try:
        for topic in CONSUMED:
            records = await read_to_end(world.broker.bootstrap_servers, "chaos." + topic)
            picked = [r for r in records if rng.random() < share]
            if reorder:
                picked.reverse()
            for rec in picked:
                await producer.send_and_wait(
                    rec.topic, rec.value, key=rec.key, headers=list(rec.headers or ())
                )
                count += 1
    finally:
        await producer.stop()
    return count


async def test_conversions_survive_kills_restarts_redelivery_and_reordering(world: World) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    receiver = Receiver()
    hooks = Starlette(routes=[Route("/hooks", receiver.handle, methods=["POST"])])
    headers = {"Authorization": f"Bearer {world.injected.pop('key')}"}
    async with (
        http_receiver(hooks) as receiver_url,
        httpx.AsyncClient(headers=headers, timeout=15) as http,
    ):
        program = await rewarded_program(
            http,
            world.url("link-service"),
            world.url("attribution-service"),
            world.url("reward-service"),
            ADVOCATES,
        )
        codes = program.codes
        r = await http.post(
            f"{world.url('notification-service')}/v1/webhook-endpoints",
            json={"url": f"{receiver_url}/hooks", "event_types": ["reward.available.v1"]},
        )
        assert r.status_code == 201, r.text

        # the faults, each once, spread over the push
        faults = [
            lambda: world.kill9_and_restart("attribution-service"),
            world.restart_broker,
            lambda: world.kill9_and_restart("reward-service"),
            world.restart_postgres,
            lambda: world.kill9_and_restart("notification-service"),
            lambda: world.kill9_and_restart("link-service"),
        ]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(CONVERSIONS):
            queue.put_nowait(n)
        statuses: dict[int, int] = {}

        async def client() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = purchase(n, codes[n % ADVOCATES])
                r = await until_ok(
                    lambda b=body, k=n: http.post(
                        f"{world.url('attribution-service')}/v1/conversions",
                        json=b,
                        headers={"Idempotency-Key": f"ord_{k}"},
                    ),
                    f"conversion {n}",
                )
                statuses[n] = r.status_code

        async def injector() -> None:
            step = CONVERSIONS // (len(faults) + 1)
            for i, fault in enumerate(faults, start=1):
                while CONVERSIONS - queue.qsize() < i * step:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await fault()

        await asyncio.gather(injector(), *(client() for _ in range(CONCURRENCY)))
        pushed = time.monotonic() - started
        assert set(statuses.values()) <= {200, 201}, statuses

        groups = ["chaos." + g for g in CONSUMER_GROUPS]
        await wait_caught_up(world.broker.bootstrap_servers, groups, timeout=300)
        world.injected["redelivered"] = await _redeliver(world, 0.10, False, rng)
        world.injected["reordered"] = await _redeliver(world, 0.05, True, rng)
        await wait_caught_up(world.broker.bootstrap_servers, groups, timeout=300)

        db = await asyncpg.connect(world.dsn)
        try:

            async def rewards_settled() -> bool:
                n = await db.fetchval("SELECT count(*) FROM reward.rewards")
                return bool(n >= CONVERSIONS)

            await eventually(rewards_settled, timeout=300)
            await eventually(lambda: len(set(receiver.ids)) >= CONVERSIONS, timeout=300)
            await asyncio.sleep(3)  # a second delivery, were one wrongly made, goes out by now
            rewards = await db.fetchval("SELECT count(*) FROM reward.rewards")
            conversions = await db.fetchval(
                "SELECT count(*) FROM attribution.conversions WHERE type = 'purchase'"
            )
            deliveries = await db.fetch(
                "SELECT message_id, count(*) AS n FROM notification.webhook_deliveries"
                " GROUP BY message_id"
            )
        finally:
            await db.close()
        r = await http.get(f"{world.url('reward-service')}/v1/admin/ledger/verify")
        verify = r.json()
        dead = await dead_letters(world.broker.bootstrap_servers, "chaos.")
        found = {
            "conversions": conversions,
            "rewards": rewards,
            "ledger_verify_ok": bool(verify.get("ok")),
            "webhook_ids": len(set(receiver.ids)),
            "webhook_requests": len(receiver.ids),
            "deliveries_per_message_max": max((d["n"] for d in deliveries), default=0),
            "dead_letters": sum(dead.values()),
        }
        print(
            json.dumps(
                {
                    "profile": CONVERSIONS,
                    "injected": world.injected,
                    "found": found,
                    "push_seconds": round(pushed, 1),
                    "total_seconds": round(time.monotonic() - started, 1),
                }
            )
        )
        assert conversions == CONVERSIONS
        assert rewards == CONVERSIONS, found
        assert verify.get("ok"), verify
        assert found["webhook_ids"] == CONVERSIONS, found
        assert found["deliveries_per_message_max"] == 1, found
        assert found["dead_letters"] == 0, dead

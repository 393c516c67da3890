"""Replicas join and leave mid-run, and the results stay exact (issue #24, sizing).

Two replicas of each consumer service (attribution, reward, notification), each pair in one
consumer group, every topic with 6 partitions (a topic prefix of the test's own), link-service
once; all real processes (devstack) on a real broker and Postgres. Purchases flow through the
live attribution replicas in turn while, for each consumer service at once, one replica is
killed (-9: its partitions wait for its session to time out, the outbox relay's advisory lock
goes with its connection), a new replica joins, and then the other first replica is stopped
gracefully (SIGTERM: it finishes its batch, commits and leaves the group). At the end:

- every purchase was attributed once and every advocate's balance is exactly its purchases'
  rewards; `GET /v1/admin/ledger/verify` is clean;
- each endpoint received every `reward.available.v1` event on the topic (by webhook-id, the
  event id), and no other: one delivery per event per endpoint; a webhook-id more than once only
  as a delivery the kill cut short and sent again after its lease (delivery is at least once
  by design: the delivery row's counted attempts bound the requests);
- nothing went to a dead-letter topic, and no consumer crashed (a commit refused because a
  rebalance moved the partition is no failure: referral_events.inbox goes on polling).

REPLICAS_CONVERSIONS (default 240) sets the number of purchases."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack import services
from devstack.pytest_plugin import Namespace
from devstack.testing import (
    eventually,
    http_receiver,
    new_api_key,
    read_to_end,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

CONVERSIONS = int(os.environ.get("REPLICAS_CONVERSIONS", "240"))
ADVOCATES = 12
REWARD_MINOR = 100
RATE = 15.0  # purchases per second offered (the faults take seconds each: they overlap the flow)
CLIENTS = 4
PARTITIONS = 6
LINK = services.SERVICES[0]
CONSUMERS = services.SERVICES[1:]  # attribution, reward, notification
GROUPS = [svc.name for svc in CONSUMERS]  # the main group of each, among others
ENDPOINTS = ("a", "b")
READY_WITHIN_S = 300  # generous: a loaded 2-core machine takes minutes to import seven services


@dataclass
class Receiver:
    """Both webhook endpoints' receiver: the webhook-ids each endpoint got, in order."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {e: [] for e in ENDPOINTS})

    async def handle(self, request: Request) -> Response:
        await request.body()
        self.ids[request.path_params["endpoint"]].append(request.headers["webhook-id"])
        return Response(status_code=204)


@dataclass
class Stack:
    ns: Namespace
    cfg: services.StackConfig
    link: services.RunningService
    # each consumer service's live replicas, oldest first
    replicas: dict[str, list[services.RunningService]]
    headers: dict[str, str]
    log_dir: Path
    next_replica: int = 2
    # what was done to the replicas, in order
    done: list[str] = field(default_factory=list)

    def urls(self, name: str) -> list[str]:
        return [r.url for r in self.replicas[name]]

    async def leave(self, index: int) -> None:
        """SIGTERM the `index`th live replica of each consumer service; wait for the exits."""
        gone = [self.replicas[svc.name].pop(index) for svc in CONSUMERS]
        for r in gone:
            r.process.send_signal(signal.SIGTERM)
        for r in gone:
            code = await asyncio.to_thread(r.process.wait, 60)
            assert code in (0, -signal.SIGTERM), f"{r.definition.name} exited {code}"
        self.done.append("sigterm " + ", ".join(f"{r.definition.name}-{r.replica}" for r in gone))

    async def kill(self, index: int) -> None:
        gone = [self.replicas[svc.name].pop(index) for svc in CONSUMERS]
        for r in gone:
            r.process.send_signal(signal.SIGKILL)
        for r in gone:
            await asyncio.to_thread(r.process.wait, 30)
        self.done.append("kill -9 " + ", ".join(f"{r.definition.name}-{r.replica}" for r in gone))

    async def join(self) -> None:
        """A new replica of each consumer service (a port and log of its own), ready."""
        n, self.next_replica = self.next_replica, self.next_replica + 1
        started = [services.start(self.cfg, (svc,), replica=n)[0] for svc in CONSUMERS]
        await asyncio.to_thread(services.wait_ready, started, READY_WITHIN_S)
        for r in started:
            self.replicas[r.definition.name].append(r)
        self.done.append(f"joined replica {n} of each")


@pytest.fixture
async def stack(namespace: Namespace, tmp_path: Path) -> AsyncIterator[Stack]:
    key, entry = new_api_key("acme")
    log_dir = tmp_path / "logs"
    cfg = dataclasses.replace(
        namespace.stack_config([entry], log_dir, OUTBOX_POLL_INTERVAL_SECONDS="0.2"),
        topic_partitions=PARTITIONS,
    )
    t0 = time.monotonic()
    await asyncio.to_thread(services.migrate_here, cfg)
    print(f"migrated in {time.monotonic() - t0:.1f}s")
    first = services.start(cfg)
    second = services.start(cfg, CONSUMERS, replica=1)
    stack = Stack(
        namespace,
        cfg,
        first[0],
        {svc.name: [r for r in (*first, *second) if r.definition is svc] for svc in CONSUMERS},
        {"Authorization": f"Bearer {key}"},
        log_dir,
    )
    try:
        await asyncio.to_thread(services.wait_ready, [*first, *second], READY_WITHIN_S)
        print(f"seven processes ready in {time.monotonic() - t0:.1f}s")
        yield stack
    finally:
        live = [stack.link, *(r for rs in stack.replicas.values() for r in rs)]
        await asyncio.to_thread(services.stop, live)
        for log in sorted(log_dir.glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-3000:]}")


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _groups(bootstrap: str, prefix: str) -> list[str]:
    """Every consumer group of the test's services (the services' own, analytics', the key
    copies')."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return [g for g, _ in await admin.list_consumer_groups() if g.startswith(prefix)]
    finally:
        await admin.close()


async def _post_anywhere(
    http: httpx.AsyncClient, urls: Callable[[], list[str]], n: int, body: dict[str, str]
) -> int:
    """The client's retry: the same purchase (same Idempotency-Key) to the next live replica
    until one answers (a replica stopping or killed meanwhile refuses or drops the request)."""
    deadline = time.monotonic() + 120
    attempt = n
    while True:
        live = urls()
        if live:
            try:
                r = await http.post(
                    f"{live[attempt % len(live)]}/v1/conversions",
                    json=body,
                    headers={"Idempotency-Key": f"ord_{n}"},
                )
                if r.status_code < 500:
                    return r.status_code
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"purchase {n} answered by no replica")
        attempt += 1
        await asyncio.sleep(0.2)


async def test_replicas_join_and_leave_mid_run_results_stay_exact(stack: Stack) -> None:
    started = time.monotonic()
    bootstrap = stack.ns.kafka_bootstrap_servers
    prefix = stack.ns.topic_prefix
    for topic in ("link.events", "attribution.events", "reward.events"):
        assert await _partitions(bootstrap, prefix + topic) == PARTITIONS, topic
    receiver = Receiver()
    hooks = Starlette(routes=[Route("/hooks/{endpoint}", receiver.handle, methods=["POST"])])
    async with (
        http_receiver(hooks) as receiver_url,
        httpx.AsyncClient(headers=stack.headers, timeout=15) as http,
    ):
        link = stack.link.url
        [attribution, reward, notification] = (stack.urls(s.name)[0] for s in CONSUMERS)
        r = await http.post(
            f"{link}/v1/programs", json={"name": "replicas", "landing_url": "https://s.example"}
        )
        assert r.status_code == 201, r.text
        program = r.json()["id"]
        r = await http.put(
            f"{reward}/v1/programs/{program}/reward-rule",
            json={
                "advocate_reward": {"amount_minor": REWARD_MINOR, "currency": "USD"},
                "trigger": "first_purchase",
            },
        )
        assert r.status_code == 200, r.text
        r = await http.put(
            f"{attribution}/v1/programs/{program}/attribution-settings",
            json={"fraud": {"too_fast": {"enabled": False}, "velocity": {"enabled": False}}},
        )
        assert r.status_code == 200, r.text
        endpoint_ids = {}
        for e in ENDPOINTS:
            r = await http.post(
                f"{notification}/v1/webhook-endpoints",
                json={"url": f"{receiver_url}/hooks/{e}", "event_types": ["reward.available.v1"]},
            )
            assert r.status_code == 201, r.text
            endpoint_ids[r.json()["id"]] = e
        advocates: list[tuple[str, str]] = []
        for i in range(ADVOCATES):
            r = await http.post(
                f"{link}/v1/programs/{program}/advocates", json={"customer_id": f"cus_adv_{i}"}
            )
            assert r.status_code == 201, r.text
            advocates.append((r.json()["id"], r.json()["code"]))

        async def codes_known() -> bool:  # every code has reached both attribution replicas' copy
            for url in stack.urls("attribution-service"):
                r = await http.post(
                    f"{url}/v1/conversions",
                    json={"type": "signup", "customer_id": "cus_probe", "code": advocates[-1][1]},
                )
                if r.status_code not in (200, 201) or r.json()["status"] != "attributed":
                    return False
            return True

        await eventually(codes_known, timeout=120)
        print(f"set up in {time.monotonic() - started:.1f}s")

        # Purchases at a steady rate while the replicas leave and join.
        sent = 0
        pushed_at = time.monotonic()
        statuses: Counter[int] = Counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(CONVERSIONS):
            queue.put_nowait(n)

        async def client() -> None:
            nonlocal sent
            while not queue.empty():
                n = queue.get_nowait()
                await asyncio.sleep(max(0.0, pushed_at + n / RATE - time.monotonic()))
                body = {
                    "type": "purchase",
                    "customer_id": f"cus_friend_{n}",
                    "order_id": f"ord_{n}",
                    "amount": "10.00",
                    "currency": "USD",
                    "code": advocates[n % ADVOCATES][1],
                }
                statuses[
                    await _post_anywhere(http, lambda: stack.urls("attribution-service"), n, body)
                ] += 1
                sent += 1

        faults: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (0.15, lambda: stack.kill(0)),  # replica 0 of each is killed: its partitions wait
            (0.15, stack.join),  # replica 2 of each joins
            (0.5, lambda: stack.leave(0)),  # replica 1 of each leaves (SIGTERM)
        ]

        async def injector() -> None:
            for share, fault in faults:
                while sent < share * CONVERSIONS:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await fault()

        await asyncio.gather(injector(), *(client() for _ in range(CLIENTS)))
        pushed = time.monotonic() - pushed_at
        assert set(statuses) <= {200, 201}, statuses

        print(f"pushed in {pushed:.1f}s: {stack.done}")
        groups = await _groups(bootstrap, prefix)
        assert {prefix + g for g in GROUPS} <= set(groups), groups
        await wait_caught_up(bootstrap, groups, timeout=300)
        print(f"caught up at {time.monotonic() - started:.1f}s")
        db = await asyncpg.connect(stack.ns.database_url)
        try:

            async def rewards_settled() -> bool:
                n = await db.fetchval("SELECT count(*) FROM reward.rewards")
                return bool(n >= CONVERSIONS)

            await eventually(rewards_settled, timeout=120)
            await eventually(
                lambda: all(len(set(receiver.ids[e])) >= CONVERSIONS for e in ENDPOINTS),
                timeout=180,
            )
            await asyncio.sleep(2)  # a second delivery, were one wrongly made, goes out by now
            conversions = await db.fetchval(
                "SELECT count(*) FROM attribution.conversions WHERE type = 'purchase'"
            )
            rewards = await db.fetchval("SELECT count(*) FROM reward.rewards")
            deliveries = await db.fetch(
                "SELECT endpoint_id, message_id, attempts FROM notification.webhook_deliveries"
            )
        finally:
            await db.close()

        balances = {}
        for adv, _code in advocates:
            r = await http.get(f"{stack.urls('reward-service')[0]}/v1/accounts/{adv}/balance")
            assert r.status_code == 200, r.text
            balances[adv] = {b["unit"]: b["available"] for b in r.json()["balances"]}
        r = await http.get(f"{stack.urls('reward-service')[-1]}/v1/admin/ledger/verify")
        verify = r.json()

    # the events each endpoint must have got: every reward.available.v1 on the topic
    expected = {
        event["id"]
        for rec in await read_to_end(bootstrap, prefix + "reward.events")
        if (event := json.loads(rec.value))["type"] == "reward.available.v1"
    }
    dead = {
        topic: len(await read_to_end(bootstrap, topic))
        for topic in await _topics(bootstrap)
        if topic.startswith(prefix) and topic.endswith(".dlq")
    }
    attempts = {
        (endpoint_ids[d["endpoint_id"]], d["message_id"]): d["attempts"] for d in deliveries
    }
    resent = {(e, i): n for e in ENDPOINTS for i, n in Counter(receiver.ids[e]).items() if n > 1}
    print(
        json.dumps(
            {
                "conversions": CONVERSIONS,
                "partitions": PARTITIONS,
                "faults": stack.done,
                "push_seconds": round(pushed, 1),
                "total_seconds": round(time.monotonic() - started, 1),
                "webhook_requests": {e: len(receiver.ids[e]) for e in ENDPOINTS},
                "resent_after_lease": len(resent),
                "dead_letters": sum(dead.values()),
            }
        )
    )
    assert len(stack.done) == len(faults), stack.done
    assert conversions == CONVERSIONS
    assert rewards == CONVERSIONS
    per_advocate = CONVERSIONS // ADVOCATES
    want = [
        {"USD": f"{(per_advocate + (i < CONVERSIONS % ADVOCATES)) * REWARD_MINOR / 100:.2f}"}
        for i in range(ADVOCATES)
    ]
    assert [balances[adv] for adv, _ in advocates] == want
    assert verify.get("ok"), verify
    assert len(expected) == CONVERSIONS
    for e in ENDPOINTS:
        assert set(receiver.ids[e]) == expected, e
    assert len(deliveries) == len(ENDPOINTS) * CONVERSIONS
    assert all(n <= attempts[key] for key, n in resent.items()), (resent, attempts)
    assert sum(dead.values()) == 0, dead
    crashed = [
        line
        for log in sorted(stack.log_dir.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "crashed; restarting" in line
    ]
    assert not crashed, crashed

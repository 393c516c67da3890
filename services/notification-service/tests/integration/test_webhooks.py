"""Webhooks end to end inside one process, on real Kafka and Postgres: events produced to the
topics as reward-service would, the service in-process, and a real HTTP receiver on loopback
that verifies every signature. Time is an injected clock the test moves forward, so retry
spacing is checked without waiting for it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from devstack.paths import free_port
from devstack.pytest_plugin import Namespace
from devstack.testing import eventually, migrate, new_api_key, read_topic, serve_in_process
from notification_service.config import Settings
from notification_service.main import create_app
from notification_service.webhooks.verify import WebhookVerificationError, verify
from referral_events import CloudEvent, new_event
from referral_events.contracts import reward

pytestmark = pytest.mark.integration


# --- a receiver on loopback ---------------------------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any


@dataclass
class Receiver:
    """Answers each path from a script (the last entry repeats) and keeps what it verified.
    A request whose signature does not verify is answered 400 and kept apart."""

    secrets: dict[str, str] = field(default_factory=dict)
    # An entry is a status, or (status, headers) for answers such as 429 with Retry-After.
    scripts: dict[str, list[int | tuple[int, dict[str, str]]]] = field(default_factory=dict)
    received: list[Delivery] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # A path with a gate holds every answer until the gate opens: a hanging receiver.
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    # The time signatures are checked against: the service's injected clock when it moves.
    clock: Callable[[], datetime] | None = None
    # path -> each message's first N attempts there are answered 503, later ones 200.
    fail_first: dict[str, int] = field(default_factory=dict)

    def on(self, path: str) -> list[Delivery]:
        return [d for d in self.received if d.path == path]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        try:
            now = self.clock() if self.clock is not None else None
            payload = verify(self.secrets[path], body, dict(request.headers), now=now)
        except (KeyError, WebhookVerificationError) as exc:
            self.rejected.append(f"{path}: {exc!r}")
            return PlainTextResponse("bad signature", status_code=400)
        self.received.append(Delivery(path, dict(request.headers), body, payload))
        if path in self.gates:
            await self.gates[path].wait()
        if path in self.fail_first:
            msg_id = request.headers["webhook-id"]
            seen = len([d for d in self.on(path) if d.headers["webhook-id"] == msg_id])
            status = 503 if seen <= self.fail_first[path] else 200
            return PlainTextResponse(f"answer {status}", status_code=status)
        script = self.scripts.get(path, [200])
        entry = script[min(len(self.on(path)) - 1, len(script) - 1)]
        status, headers = entry if isinstance(entry, tuple) else (entry, {})
        return PlainTextResponse(f"answer {status}", status_code=status, headers=headers)


@asynccontextmanager
async def serve_receiver(receiver: Receiver) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- the service --------------------------------------------------------------------------------


class SteppedClock:
    """Wall-clock time plus an offset the test advances: never behind the database's now(),
    which stamps new deliveries as due."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Env:
    ns: Namespace
    key: str
    other_key: str
    settings: Settings
    clock: SteppedClock
    producer: AIOKafkaProducer

    @asynccontextmanager
    async def service(self) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        app = create_app(self.settings, clock=self.clock)
        async with serve_in_process(app, self.key) as client:
            yield client, app

    async def publish(self, event: CloudEvent, topic: str = "reward.events") -> None:
        await self.producer.send_and_wait(
            self.ns.topic_prefix + topic, event.to_json(), key=event.data["advocate_id"].encode()
        )

    async def events_out(self, until: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
        records = await read_topic(
            self.ns.kafka_bootstrap_servers,
            self.ns.topic_prefix + "notification.events",
            lambda rs: until([json.loads(r.value) for r in rs]),
        )
        return records


def make_env(**overrides: Any) -> Callable[[Namespace], Awaitable[Env]]:
    async def build(ns: Namespace) -> Env:
        await migrate(ns.database_url, "notification", "notification_service")
        key, entry = new_api_key("acme")
        other_key, other_entry = new_api_key("globex")
        settings = Settings(
            **ns.settings_env(),
            api_keys=[entry, other_entry],
            webhook_allow_http=True,
            webhook_allow_private_networks=True,
            **{
                "webhook_poll_interval_seconds": 0.1,
                "outbox_poll_interval_seconds": 0.2,
                **overrides,
            },
        )
        producer = AIOKafkaProducer(bootstrap_servers=ns.kafka_bootstrap_servers)
        await producer.start()
        return Env(ns, key, other_key, settings, SteppedClock(), producer)

    return build


@pytest.fixture
async def env(namespace: Namespace) -> AsyncIterator[Env]:
    built = await make_env()(namespace)
    try:
        yield built
    finally:
        await built.producer.stop()


@pytest.fixture
async def quick_env(namespace: Namespace) -> AsyncIterator[Env]:
    built = await make_env(webhook_retry_schedule_seconds=[0.2, 0.2], webhook_retry_jitter=0)(
        namespace
    )
    try:
        yield built
    finally:
        await built.producer.stop()


def reward_available(reward_id: str = "rwd_1", tenant: str = "acme") -> CloudEvent:
    return new_event(
        reward.RewardAvailable(
            reward_id=reward_id,
            program_id="prg_1",
            advocate_id="adv_1",
            holder_id="adv_1",
            role="advocate",
            conversion_id="cnv_1",
            kind="cash",
            amount=2000,
            unit="USD",
        ),
        source="/services/reward-service",
        tenant_id=tenant,
        subject=reward_id,
    )


def reward_pending(reward_id: str = "rwd_1") -> CloudEvent:
    return new_event(
        reward.RewardPending(
            reward_id=reward_id,
            program_id="prg_1",
            advocate_id="adv_1",
            holder_id="adv_1",
            role="advocate",
            conversion_id="cnv_1",
            kind="cash",
            amount=2000,
            unit="USD",
            available_at=datetime.now(UTC) + timedelta(days=30),
        ),
        source="/services/reward-service",
        tenant_id="acme",
    )


async def create_endpoint(
    client: httpx.AsyncClient, receiver: Receiver, base: str, path: str, **body: Any
) -> dict[str, Any]:
    r = await client.post("/v1/webhook-endpoints", json={"url": f"{base}{path}", **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    receiver.secrets[path] = created["secret"]
    return created


async def deliveries(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["items"]
    return rows


# --- tests --------------------------------------------------------------------------------------


async def test_an_event_is_delivered_once_signed_and_logged(env: Env) -> None:
    receiver = Receiver()
    async with serve_receiver(receiver) as base, env.service() as (client, app):
        endpoint = await create_endpoint(
            client,
            receiver,
            base,
            "/hooks",
            event_types=["reward.available.v1"],
            description="  CRM sync ",
        )
        assert endpoint["id"].startswith("ep_") and endpoint["enabled"]
        assert endpoint["description"] == "CRM sync"
        assert endpoint["secret"].startswith("whsec_")
        assert len(base64.b64decode(endpoint["secret"].removeprefix("whsec_"))) == 24

        listed = (await client.get("/v1/webhook-endpoints")).json()["items"]
        assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
        got = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")
        assert got.status_code == 200 and got.json()["event_types"] == ["reward.available.v1"]

        # another workspace sees nothing of acme's
        other = {"Authorization": f"Bearer {env.other_key}"}
        for path in ("", "/deliveries"):
            r = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}{path}", headers=other)
            assert r.status_code == 404, r.text
            assert r.headers["content-type"] == "application/problem+json"
        assert (await client.get("/v1/webhook-endpoints", headers=other)).json()["items"] == []

        # a pending reward is filtered out; an available one, and one of another
        # workspace, arrive in the same partition after it
        event = reward_available()
        await env.publish(reward_pending())
        await env.publish(reward_available("rwd_other", tenant="globex"))
        await env.publish(event)

        await eventually(lambda: len(receiver.received) >= 1)
        assert receiver.rejected == []
        delivery = receiver.received[0]
        assert delivery.headers["webhook-id"] == event.id
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.payload["type"] == "reward.available.v1"
        assert delivery.payload["timestamp"] == event.time.isoformat().replace("+00:00", "Z")
        assert delivery.payload["data"] == {**event.data, "tenant_id": "acme"}

        async def delivered() -> list[dict[str, Any]]:
            rows = await deliveries(client, endpoint["id"])
            return rows if rows and rows[0]["status"] == "delivered" else []

        [row] = await eventually(delivered)
        assert row["message_id"] == event.id and row["event_type"] == "reward.available.v1"
        assert row["attempt_count"] == 1 and row["next_attempt_at"] is None
        [attempt] = row["attempts"]
        assert attempt["status_code"] == 200 and attempt["outcome"] == "delivered"
        assert attempt["response_body"] == "answer 200" and attempt["latency_ms"] >= 0
        assert attempt["error"] is None

        out = await env.events_out(
            lambda evs: any(e["type"] == "delivery.succeeded.v1" for e in evs)
        )
        [succeeded] = [r for r in out if json.loads(r.value)["type"] == "delivery.succeeded.v1"]
        assert succeeded.key == endpoint["id"].encode()
        data = json.loads(succeeded.value)["data"]
        assert data["delivery_id"] == row["id"] and data["message_id"] == event.id
        assert data["status_code"] == 200 and data["attempt"] == 1

        # the same event again (a producer retry, a relay crash): nothing new
        consumer = app.state.runtime.consumers[0]
        await env.publish(event)
        await eventually(lambda: consumer.duplicates >= 1)
        await asyncio.sleep(1.0)  # ten dispatcher polls: time for a wrong second delivery
        assert len(receiver.received) == 1
        assert len(await deliveries(client, endpoint["id"])) == 1


async def test_a_failed_attempt_is_retried_on_schedule_and_survives_a_restart(env: Env) -> None:
    receiver = Receiver(scripts={"/flaky": [500, 200]})
    async with serve_receiver(receiver) as base:
        async with env.service() as (client, _app):
            endpoint = await create_endpoint(client, receiver, base, "/flaky")
            # issue 17: the documented default (the reward lifecycle), no longer [] = everything
            assert endpoint["event_types"] == ["reward.*"]
            event = reward_available()
            await env.publish(event)

            async def first_attempt_logged() -> dict[str, Any] | None:
                rows = await deliveries(client, endpoint["id"])
                return rows[0] if rows and rows[0]["attempts"] else None

            row = await eventually(first_attempt_logged)
            assert row["status"] == "pending" and row["last_status_code"] == 500
            [attempt] = row["attempts"]
            assert attempt["outcome"] == "retry" and attempt["response_body"] == "answer 500"
            wait = datetime.fromisoformat(row["next_attempt_at"]) - datetime.fromisoformat(
                attempt["attempted_at"]
            )
            # the first retry waits 5 s, with 10% jitter either way
            assert timedelta(seconds=4.5) <= wait <= timedelta(seconds=5.5), wait
            await asyncio.sleep(0.5)
            assert len(receiver.on("/flaky")) == 1  # not before its time

        # the process stops with the retry pending; a new one picks it up from Postgres
        env.clock.advance(6)
        async with env.service() as (client, _app):

            async def delivered() -> dict[str, Any] | None:
                rows = await deliveries(client, endpoint["id"])
                return rows[0] if rows and rows[0]["status"] == "delivered" else None

            row = await eventually(delivered)
            assert [a["status_code"] for a in row["attempts"]] == [500, 200]
            assert [a["outcome"] for a in row["attempts"]] == ["retry", "delivered"]
            assert row["attempt_count"] == 2 and row["last_error"] is None

            first, second = receiver.on("/flaky")
            assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.id
            assert first.body == second.body
            sent_apart = int(second.headers["webhook-timestamp"]) - int(
                first.headers["webhook-timestamp"]
            )
            assert sent_apart >= 5
            assert receiver.rejected == []

            out = await env.events_out(
                lambda evs: any(e["type"] == "delivery.succeeded.v1" for e in evs)
            )
            types = [json.loads(r.value)["type"] for r in out]
            assert types == ["delivery.succeeded.v1"]
            assert json.loads(out[0].value)["data"]["attempt"] == 2

            r = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}")
            assert r.json()["failing_since"] is None  # the success cleared it


async def test_gone_disables_and_exhausted_retries_fail(quick_env: Env) -> None:
    env = quick_env
    receiver = Receiver(scripts={"/gone": [410], "/down": [503]})
    async with serve_receiver(receiver) as base, env.service() as (client, _app):
        gone = await create_endpoint(client, receiver, base, "/gone")
        down = await create_endpoint(client, receiver, base, "/down", event_types=["reward.*"])
        events = [reward_available(f"rwd_{i}") for i in range(3)]

        async def settled(endpoint_id: str, count: int) -> list[dict[str, Any]]:
            rows = await deliveries(client, endpoint_id)
            done = len(rows) == count and all(r["status"] != "pending" for r in rows)
            return rows if done else []

        await env.publish(events[0])
        [gone_row] = await eventually(lambda: settled(gone["id"], 1))
        assert gone_row["status"] == "failed" and gone_row["last_status_code"] == 410
        assert [a["outcome"] for a in gone_row["attempts"]] == ["failed"]
        endpoint = (await client.get(f"/v1/webhook-endpoints/{gone['id']}")).json()
        assert not endpoint["enabled"] and endpoint["disabled_reason"] == "gone"
        assert endpoint["failing_since"] is not None

        # a disabled endpoint is no longer fanned out to
        for event in events[1:]:
            await env.publish(event)
        down_rows = await eventually(lambda: settled(down["id"], 3), timeout=60)
        for row in down_rows:
            assert row["status"] == "failed" and row["attempt_count"] == 3
            assert [a["outcome"] for a in row["attempts"]] == ["retry", "retry", "failed"]
            assert row["last_error"] == "HTTP 503" and row["failed_at"] is not None
        assert len(receiver.on("/down")) == 9 and len(receiver.on("/gone")) == 1
        assert len(await deliveries(client, gone["id"])) == 1

        # newest first, two to a page
        r = await client.get(f"/v1/webhook-endpoints/{down['id']}/deliveries?limit=2")
        page = r.json()
        assert len(page["items"]) == 2 and page["next_cursor"] is not None
        assert r.headers["link"].endswith('rel="next"')
        r = await client.get(
            f"/v1/webhook-endpoints/{down['id']}/deliveries",
            params={"limit": 2, "cursor": page["next_cursor"]},
        )
        rest = r.json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None
        seen = {d["id"] for d in page["items"] + rest["items"]}
        assert seen == {d["id"] for d in down_rows}
        r = await client.get(
            f"/v1/webhook-endpoints/{down['id']}/deliveries", params={"cursor": gone_row["id"]}
        )
        assert r.status_code == 422 and r.json()["field"] == "/cursor"

        def failures(evs: list[dict[str, Any]]) -> bool:
            return len([e for e in evs if e["type"] == "delivery.failed.v1"]) >= 4

        out = [json.loads(r.value) for r in await env.events_out(failures)]
        failed = [e["data"] for e in out if e["type"] == "delivery.failed.v1"]
        assert all(not f["will_retry"] for f in failed)
        assert sorted(f["status_code"] for f in failed) == [410, 503, 503, 503]
        assert not any(e["type"] == "delivery.succeeded.v1" for e in out)


async def test_endpoint_urls_are_guarded(namespace: Namespace) -> None:
    """Production settings: https only and no private destinations. Names resolve through a
    fake resolver and nothing is delivered, so no connection leaves the machine."""
    await migrate(namespace.database_url, "notification", "notification_service")
    key, entry = new_api_key("acme")
    settings = Settings(**namespace.settings_env(), api_keys=[entry])

    async def resolve(host: str, port: int) -> list[str]:
        return {"hooks.example.com": ["93.184.215.14"], "intranet.example.com": ["10.0.0.7"]}[host]

    def no_network(request: httpx.Request) -> httpx.Response:
        pytest.fail(f"a webhook to {request.url} was attempted")

    # Nothing is delivered here; should anything be, it fails the test instead of leaving.
    app = create_app(settings, resolver=resolve, transport=httpx.MockTransport(no_network))
    async with serve_in_process(app, key) as client:
        for url, words in [
            ("http://hooks.example.com/in", "https"),
            ("https://127.0.0.1/in", "loopback"),
            ("https://10.0.0.1/in", "private"),
            ("https://169.254.169.254/latest", "metadata"),
            ("https://[::1]/in", "loopback"),
            ("https://intranet.example.com/in", "private"),
        ]:
            r = await client.post("/v1/webhook-endpoints", json={"url": url})
            assert r.status_code == 422, (url, r.text)
            problem = r.json()
            assert r.headers["content-type"] == "application/problem+json"
            assert problem["field"] == "/url" and words in problem["detail"], problem

        r = await client.post(
            "/v1/webhook-endpoints",
            json={"url": "https://hooks.example.com/in", "event_types": ["reward.availble.v1"]},
        )
        assert r.status_code == 422 and r.json()["field"] == "/event_types"
        r = await client.post("/v1/webhook-endpoints", json={"event_types": []})
        assert r.status_code == 422 and r.json()["field"] == "/url"
        r = await client.post(
            "/v1/webhook-endpoints",
            json={"url": "https://hooks.example.com/in", "event_types": ["reward.*"]},
        )
        assert r.status_code == 201, r.text
        assert (await client.get("/v1/webhook-endpoints/ep_missing")).status_code == 404
        r = await client.get("/v1/webhook-endpoints", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401


async def test_a_hanging_endpoint_does_not_hold_up_the_others(namespace: Namespace) -> None:
    env = await make_env(webhook_per_endpoint_concurrency=1)(namespace)
    receiver = Receiver(gates={"/hangs": asyncio.Event()})
    try:
        async with serve_receiver(receiver) as base, env.service() as (client, _app):
            hangs = await create_endpoint(client, receiver, base, "/hangs")
            healthy = await create_endpoint(client, receiver, base, "/healthy")
            for i in range(3):
                await env.publish(reward_available(f"rwd_{i}"))

            await eventually(lambda: len(receiver.on("/healthy")) == 3)
            # one attempt at a time per endpoint: the hanging one has one request open
            await asyncio.sleep(0.3)
            assert len(receiver.on("/hangs")) == 1

            receiver.gates["/hangs"].set()
            await eventually(lambda: len(receiver.on("/hangs")) == 3)
            for endpoint in (hangs, healthy):

                async def all_delivered(endpoint_id: str = endpoint["id"]) -> bool:
                    rows = await deliveries(client, endpoint_id)
                    return len(rows) == 3 and all(r["status"] == "delivered" for r in rows)

                await eventually(all_delivered)
    finally:
        await env.producer.stop()


async def test_a_new_endpoint_gets_the_reward_lifecycle_unless_it_names_its_types(
    env: Env,
) -> None:
    """Issue 17: an endpoint created without a filter received every type of every topic."""
    async with env.service() as (client, _app):
        url = "https://hooks.example.com/in"
        r = await client.post("/v1/webhook-endpoints", json={"url": url})
        assert r.status_code == 201, r.text
        endpoint = r.json()
        assert endpoint["event_types"] == ["reward.*"]
        for body in ({"url": url, "event_types": []},):
            r = await client.post("/v1/webhook-endpoints", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["field"] == "/event_types", r.json()
        r = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"event_types": []})
        assert r.status_code == 422 and r.json()["field"] == "/event_types", r.text
        r = await client.post("/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]})
        assert r.status_code == 201 and r.json()["event_types"] == ["*"], r.text


BACKLOG = 20_000


async def test_a_failing_endpoint_with_a_big_backlog_does_not_delay_another(
    namespace: Namespace,
) -> None:
    """Issue 17: one endpoint's backlog must not delay another's deliveries. /down answers 503
    and has 20,000 deliveries due for an hour (older than anything else, so a claim that took
    the oldest due first would send them all before anything new); /healthy still gets each
    new event within seconds, and /down never has more than its slots in flight."""
    env = await make_env(webhook_retry_jitter=0)(namespace)
    receiver = Receiver(scripts={"/down": [503]})
    db = await asyncpg.connect(
        namespace.database_url, server_settings={"search_path": "notification"}
    )
    try:
        async with serve_receiver(receiver) as base, env.service() as (client, _app):
            down = await create_endpoint(client, receiver, base, "/down")
            body = json.dumps({"type": "reward.available.v1", "timestamp": "x", "data": {}})
            await db.execute(
                """
                INSERT INTO webhook_messages (id, tenant_id, event_type, event_time, body)
                SELECT 'msg_backlog_' || g, 'acme', 'reward.available.v1', now(), $1
                FROM generate_series(1, $2) g
                """,
                body,
                BACKLOG,
            )
            await db.execute(
                """
                INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id,
                                                next_attempt_at)
                SELECT 'dlv_backlog_' || g, 'acme', $1, 'msg_backlog_' || g,
                       now() - interval '1 hour' + g * interval '1 millisecond'
                FROM generate_series(1, $2) g
                """,
                down["id"],
                BACKLOG,
            )
            await db.execute("ANALYZE webhook_deliveries")
            await eventually(lambda: len(receiver.on("/down")) > 0)
            healthy = await create_endpoint(client, receiver, base, "/healthy")

            waits = []
            for i in range(5):
                started = time.monotonic()
                await env.publish(reward_available(f"rwd_live_{i}"))
                await eventually(lambda n=i + 1: len(receiver.on("/healthy")) == n, timeout=30)
                waits.append(time.monotonic() - started)
            # Kafka, the inbox and the dispatcher's claim, not 20,000 deliveries ahead of it
            # (at /down's pace those take minutes)
            assert max(waits) < 5.0, waits
            pending = await db.fetchval(
                "SELECT count(*) FROM webhook_deliveries"
                " WHERE endpoint_id = $1 AND status = 'pending' AND attempts = 0",
                down["id"],
            )
            assert pending > BACKLOG // 2, pending
            rows = await deliveries(client, healthy["id"])
            assert len(rows) == 5 and all(r["status"] == "delivered" for r in rows)
    finally:
        await db.close()
        await env.producer.stop()


async def test_new_deliveries_wake_the_dispatcher_without_waiting_for_its_poll(
    namespace: Namespace,
) -> None:
    """With a poll far longer than the test, deliveries still go out at once: the fan-out,
    the test button and a resend NOTIFY, and the dispatcher LISTENs, again after its
    connection was cut."""
    env = await make_env(webhook_poll_interval_seconds=600)(namespace)
    receiver = Receiver()
    try:
        async with serve_receiver(receiver) as base, env.service() as (client, _app):
            endpoint = await create_endpoint(client, receiver, base, "/hooks")
            for i in range(3):
                await env.publish(reward_available(f"rwd_{i}"))
                await eventually(lambda n=i + 1: len(receiver.on("/hooks")) == n, timeout=60)

            # the listening connection is cut: the dispatcher listens again on a new one
            admin = await asyncpg.connect(env.settings.database_url)
            try:

                async def listeners() -> list[int]:
                    # a connection's last statement: LISTEN once it listens (later, its checks)
                    rows = await admin.fetch(
                        """
                        SELECT pid FROM pg_stat_activity
                        WHERE application_name = 'notification-webhook-listener'
                          AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')
                        """
                    )
                    return [r["pid"] for r in rows]

                [old_pid] = await eventually(listeners, timeout=60)
                await admin.execute("SELECT pg_terminate_backend($1)", old_pid)

                async def listening_again() -> bool:
                    pids = await listeners()
                    return bool(pids) and old_pid not in pids

                await eventually(listening_again, timeout=60)
            finally:
                await admin.close()

            r = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
            assert r.status_code == 202, r.text
            await eventually(lambda: len(receiver.on("/hooks")) == 4, timeout=60)
            assert receiver.received[-1].payload["type"] == "webhook.test.v1"

            async def settled() -> list[dict[str, Any]]:
                rows = await deliveries(client, endpoint["id"])
                done = len(rows) == 4 and all(r["status"] == "delivered" for r in rows)
                return rows if done else []

            rows = await eventually(settled, timeout=60)
            r = await client.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{rows[-1]['id']}/resend"
            )
            assert r.status_code == 202, r.text
            await eventually(lambda: len(receiver.on("/hooks")) == 5, timeout=60)
            assert receiver.rejected == []
    finally:
        await env.producer.stop()


async def test_two_replicas_send_each_delivery_once(namespace: Namespace) -> None:
    """Two services on one database claim side by side: every delivery goes out exactly once
    (no lease runs out here), whichever replica claims it."""
    env = await make_env(webhook_per_endpoint_concurrency=2)(namespace)
    receiver = Receiver()
    paths = [f"/r{i}" for i in range(3)]
    try:
        async with (
            serve_receiver(receiver) as base,
            env.service() as (client, app_a),
            env.service() as (_client_b, app_b),
        ):
            for path in paths:
                await create_endpoint(client, receiver, base, path)
            events = [reward_available(f"rwd_{i}") for i in range(40)]
            for event in events:
                await env.publish(event)

            await eventually(lambda: len(receiver.received) >= len(events) * 3, timeout=90)
            await asyncio.sleep(1.0)  # time for a wrong second delivery
            assert receiver.rejected == []
            for path in paths:
                ids = sorted(d.headers["webhook-id"] for d in receiver.on(path))
                assert ids == sorted(e.id for e in events), path
            sent = [
                w.attempts_sent
                for app in (app_a, app_b)
                for w in app.state.runtime.workers
                if hasattr(w, "attempts_sent")
            ]
            assert sum(sent) == len(events) * 3 and len(sent) == 2
    finally:
        await env.producer.stop()


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_signatures_verify_across_a_secret_rotation(env: Env) -> None:
    receiver = Receiver(clock=env.clock)
    async with serve_receiver(receiver) as base, env.service() as (client, _app):
        endpoint = await create_endpoint(client, receiver, base, "/rot")
        old = endpoint["secret"]
        await env.publish(reward_available("rwd_a"))
        await eventually(lambda: len(receiver.on("/rot")) == 1)
        assert len(receiver.on("/rot")[0].headers["webhook-signature"].split()) == 1

        r = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new.startswith("whsec_") and new != old
        overlap = stamp(r.json()["previous_expires_at"]) - env.clock()
        assert timedelta(hours=23, minutes=59) < overlap <= timedelta(hours=24)
        other = {"Authorization": f"Bearer {env.other_key}"}
        r = await client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=other
        )
        assert r.status_code == 404

        # during the 24 h overlap both secrets sign: a receiver holding either one verifies
        await env.publish(reward_available("rwd_b"))
        await eventually(lambda: len(receiver.on("/rot")) == 2)
        during = receiver.on("/rot")[1]
        assert len(during.headers["webhook-signature"].split()) == 2
        for secret in (old, new):
            assert verify(secret, during.body, during.headers, now=env.clock())["data"][
                "reward_id"
            ] == ("rwd_b")

        # after it, only the new secret signs: a receiver still on the old one refuses
        env.clock.advance(24 * 3600 + 60)
        receiver.secrets["/rot"] = new
        await env.publish(reward_available("rwd_c"))
        await eventually(lambda: len(receiver.on("/rot")) == 3)
        after = receiver.on("/rot")[2]
        assert len(after.headers["webhook-signature"].split()) == 1
        verify(new, after.body, after.headers, now=env.clock())
        with pytest.raises(WebhookVerificationError):
            verify(old, after.body, after.headers, now=env.clock())
        assert receiver.rejected == []


async def test_every_event_arrives_on_the_documented_schedule_across_restarts(env: Env) -> None:
    """Every message fails its first four attempts. Between attempts the service is stopped,
    the clock moves past the scheduled wait (5 s, 5 min, 30 min, 2 h) and a new process
    starts: every retry is still there, none goes early, and every event arrives."""
    schedule = [5.0, 300.0, 1800.0, 7200.0]
    receiver = Receiver(clock=env.clock, fail_first={"/flaky": len(schedule)})
    events = [reward_available(f"rwd_{i}") for i in range(3)]
    async with serve_receiver(receiver) as base:
        async with env.service() as (client, _app):
            endpoint = await create_endpoint(client, receiver, base, "/flaky")
            for event in events:
                await env.publish(event)

            async def attempted(n: int) -> list[dict[str, Any]]:
                rows = await deliveries(client, endpoint["id"])
                done = len(rows) == 3 and all(len(r["attempts"]) >= n for r in rows)
                return rows if done else []

            await eventually(lambda: attempted(1))

        for step, wait in enumerate(schedule, start=1):
            async with env.service() as (client, _app):
                rows = await eventually(lambda n=step: attempted(n))
                for row in rows:
                    assert row["status"] == "pending" and len(row["attempts"]) == step
                    last = stamp(row["attempts"][-1]["attempted_at"])
                    due = stamp(row["next_attempt_at"]) - last
                    # the documented wait, within the 10 % jitter
                    assert timedelta(seconds=wait * 0.9) <= due <= timedelta(seconds=wait * 1.1)
                await asyncio.sleep(0.5)
                assert len(receiver.on("/flaky")) == 3 * step  # nothing goes before its time
            env.clock.advance(wait * 1.1 + 1)

        async with env.service() as (client, _app):

            async def all_delivered() -> list[dict[str, Any]]:
                rows = await deliveries(client, endpoint["id"])
                return rows if all(r["status"] == "delivered" for r in rows) else []

            rows = await eventually(all_delivered)
    for row in rows:
        assert [a["outcome"] for a in row["attempts"]] == ["retry"] * 4 + ["delivered"]
        times = [stamp(a["attempted_at"]) for a in row["attempts"]]
        for wait, (earlier, later) in zip(schedule, itertools.pairwise(times), strict=True):
            assert later - earlier >= timedelta(seconds=wait * 0.9)
    arrived = {d.headers["webhook-id"] for d in receiver.on("/flaky") if d.payload}
    assert arrived == {e.id for e in events}
    assert len(receiver.on("/flaky")) == 15 and receiver.rejected == []


async def test_endpoint_lifecycle_429_disable_enable_replay_resend_test(
    namespace: Namespace,
) -> None:
    # short waits, and a last one long enough for a 429's Retry-After to be honoured in full
    env = await make_env(webhook_retry_schedule_seconds=[0.2, 0.2, 300], webhook_retry_jitter=0)(
        namespace
    )
    try:
        await _lifecycle(env)
    finally:
        await env.producer.stop()


async def _lifecycle(env: Env) -> None:
    receiver = Receiver(
        clock=env.clock, scripts={"/busy": [(429, {"Retry-After": "120"}), 200], "/down": [503]}
    )
    async with serve_receiver(receiver) as base, env.service() as (client, _app):
        busy = await create_endpoint(
            client, receiver, base, "/busy", event_types=["reward.available.v1"]
        )
        down = await create_endpoint(client, receiver, base, "/down", description="old")

        # PATCH: description, filter; a filter nothing matches is refused
        r = await client.patch(
            f"/v1/webhook-endpoints/{down['id']}",
            json={"description": "ERP", "event_types": ["reward.*", "conversion.*"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["description"] == "ERP" and r.json()["event_types"] == [
            "reward.*",
            "conversion.*",
        ]
        r = await client.patch(
            f"/v1/webhook-endpoints/{down['id']}", json={"event_types": ["nope.*"]}
        )
        assert r.status_code == 422 and r.json()["field"] == "/event_types"
        r = await client.patch(f"/v1/webhook-endpoints/{down['id']}", json={"secret": "x"})
        assert r.status_code == 422

        # 429 with Retry-After: 120 s, although the schedule says 0.2 s
        first = reward_available("rwd_1")
        await env.publish(first)

        async def busy_row() -> dict[str, Any] | None:
            rows = await deliveries(client, busy["id"])
            return rows[0] if rows and rows[0]["attempts"] else None

        row = await eventually(busy_row)
        assert row["last_status_code"] == 429 and row["status"] == "pending"
        wait = stamp(row["next_attempt_at"]) - stamp(row["attempts"][0]["attempted_at"])
        assert wait >= timedelta(seconds=120)
        await asyncio.sleep(0.6)
        assert len(receiver.on("/busy")) == 1
        env.clock.advance(121)

        async def delivered(endpoint_id: str, n: int) -> list[dict[str, Any]]:
            rows = await deliveries(client, endpoint_id)
            ok = len([r for r in rows if r["status"] == "delivered"]) >= n
            return rows if ok else []

        await eventually(lambda: delivered(busy["id"], 1))

        # /down fails every attempt: the first message gives up after 4 attempts
        async def settled(endpoint_id: str) -> list[dict[str, Any]]:
            rows = await deliveries(client, endpoint_id)
            return rows if rows and all(r["status"] != "pending" for r in rows) else []

        async def attempted(endpoint_id: str, n: int) -> bool:
            rows = await deliveries(client, endpoint_id)
            return bool(rows) and len(rows[0]["attempts"]) >= n

        await eventually(lambda: attempted(down["id"], 3))
        env.clock.advance(301)
        [failed_row] = await eventually(lambda: settled(down["id"]))
        assert failed_row["status"] == "failed" and failed_row["attempt_count"] == 4

        # five days on, still failing: the next failure disables it, and tells
        env.clock.advance(5 * 24 * 3600)
        # (a pending reward: /busy's filter does not take it)
        await env.publish(reward_pending("rwd_2"))

        async def disabled() -> dict[str, Any] | None:
            got = (await client.get(f"/v1/webhook-endpoints/{down['id']}")).json()
            return got if not got["enabled"] else None

        got = await eventually(disabled)
        assert got["disabled_reason"] == "failing" and got["disabled_at"] is not None
        out = await env.events_out(
            lambda evs: any(e["type"] == "endpoint.disabled.v1" for e in evs)
        )
        [told] = [json.loads(r.value) for r in out if b"endpoint.disabled.v1" in r.value]
        assert told["data"]["endpoint_id"] == down["id"] and told["data"]["reason"] == "failing"
        assert told["data"]["last_status_code"] == 503
        assert [r.key for r in out if b"endpoint.disabled.v1" in r.value] == [down["id"].encode()]

        # a disabled endpoint takes no test event and no replay
        r = await client.post(f"/v1/webhook-endpoints/{down['id']}/test")
        assert r.status_code == 409 and r.json()["field"] == "/endpoint_id"
        since = (env.clock() - timedelta(days=6)).isoformat()
        r = await client.post(f"/v1/webhook-endpoints/{down['id']}/replay", json={"since": since})
        assert r.status_code == 409

        # the receiver is fixed and the endpoint enabled again: the pending retry goes out,
        # and a replay re-sends what failed
        receiver.scripts["/down"] = [200]
        r = await client.patch(f"/v1/webhook-endpoints/{down['id']}", json={"enabled": True})
        assert r.status_code == 200 and r.json()["enabled"]
        assert r.json()["disabled_reason"] is None and r.json()["failing_since"] is None
        r = await client.post(
            f"/v1/webhook-endpoints/{down['id']}/replay",
            json={"since": since, "until": since},
        )
        assert r.status_code == 422 and r.json()["field"] == "/until"
        r = await client.post(f"/v1/webhook-endpoints/{down['id']}/replay", json={"since": since})
        assert r.status_code == 202 and r.json() == {"replayed": 1}
        rows = await eventually(lambda: delivered(down["id"], 2))
        replayed = next(r for r in rows if r["id"] == failed_row["id"])
        assert [a["outcome"] for a in replayed["attempts"]] == [
            "retry",
            "retry",
            "retry",
            "failed",
            "delivered",
        ]

        # the test-event button
        r = await client.post(f"/v1/webhook-endpoints/{down['id']}/test")
        assert r.status_code == 202, r.text
        test_row = r.json()
        assert test_row["event_type"] == "webhook.test.v1" and test_row["status"] == "pending"
        await eventually(lambda: delivered(down["id"], 3))
        [ping] = [d for d in receiver.on("/down") if d.payload["type"] == "webhook.test.v1"]
        assert ping.payload["data"]["endpoint_id"] == down["id"]
        assert ping.headers["webhook-id"] == test_row["message_id"]

        # resend one delivered message: the same webhook-id again, a new round of attempts
        [busy_row_now] = await deliveries(client, busy["id"])
        r = await client.post(
            f"/v1/webhook-endpoints/{busy['id']}/deliveries/{busy_row_now['id']}/resend"
        )
        assert r.status_code == 202 and r.json()["status"] == "pending"
        await eventually(lambda: len(receiver.on("/busy")) == 3)
        assert {d.headers["webhook-id"] for d in receiver.on("/busy")} == {first.id}
        [again] = await eventually(lambda: delivered(busy["id"], 1))
        assert [a["attempt"] for a in again["attempts"]] == [1, 2, 3]
        r = await client.post(f"/v1/webhook-endpoints/{busy['id']}/deliveries/dlv_nope/resend")
        assert r.status_code == 404 and r.json()["field"] == "/delivery_id"
        assert receiver.rejected == []

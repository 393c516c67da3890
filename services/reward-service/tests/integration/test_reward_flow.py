"""reward-service in-process on real Kafka + Postgres: conversions published to
attribution.events as attribution-service would, the ledger read back over HTTP, the events
read back from reward.events. Time is moved with an injected clock, never slept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from devstack.pytest_plugin import Namespace
from devstack.testing import (
    eventually,
    migrate,
    new_api_key,
    read_to_end,
    serve_in_process,
    wait_caught_up,
)
from referral_events import CloudEvent, new_event
from referral_events.contracts.attribution import ConversionAttributed
from reward_service import domain, handlers
from reward_service.config import Settings
from reward_service.main import create_app
from reward_service.workers import RewardReleaser
from servicekit import migrations
from servicekit.db import create_pool
from servicekit.runtime import Runtime

pytestmark = pytest.mark.integration

RULE_20_USD_FIRST_PURCHASE = {
    "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
    "trigger": "first_purchase",
}


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Env:
    ns: Namespace
    settings: Settings
    clock: FakeClock
    producer: AIOKafkaProducer
    db: asyncpg.Connection
    key: str
    other_key: str
    app: FastAPI | None = field(default=None)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[httpx.AsyncClient]:
        """A fresh app on the same database and clock; leaving the block stops it."""
        self.app = create_app(self.settings, self.clock)
        async with serve_in_process(self.app, self.key) as client:
            yield client

    @property
    def runtime(self) -> Runtime:
        assert self.app is not None
        rt: Runtime = self.app.state.runtime
        return rt

    async def publish(
        self, payload: ConversionAttributed, tenant: str = "acme", event_id: str | None = None
    ) -> CloudEvent:
        event = new_event(
            payload, source="/services/attribution-service", tenant_id=tenant, event_id=event_id
        )
        await self.republish(event)
        return event

    async def republish(self, event: CloudEvent) -> None:
        await self.producer.send_and_wait(
            self.ns.topic_prefix + "attribution.events",
            event.to_json(),
            key=event.data["advocate_id"].encode(),
        )

    async def caught_up(self) -> None:
        """Everything published so far is handled, and its events are out on reward.events."""
        await wait_caught_up(
            self.ns.kafka_bootstrap_servers, [self.ns.topic_prefix + "reward-service"]
        )
        await eventually(self._outbox_empty)

    async def _outbox_empty(self) -> bool:
        backlog: int = await self.db.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return backlog == 0

    async def reward_events(self) -> list[dict[str, Any]]:
        records = await read_to_end(
            self.ns.kafka_bootstrap_servers, self.ns.topic_prefix + "reward.events"
        )
        return [{"key": r.key.decode(), **json.loads(r.value)} for r in records]

    async def assert_ledger_balances(self) -> None:
        """Every unit sums to zero over all accounts, and no account is overdrawn but the
        programs' liabilities."""
        rows = await self.db.fetch(
            """
            SELECT a.holder_type, a.unit,
                   coalesce(sum(CASE WHEN t.credit_account = a.id THEN t.amount
                                     ELSE -t.amount END), 0) AS balance
            FROM accounts a
            LEFT JOIN transfers t ON a.id IN (t.debit_account, t.credit_account)
            GROUP BY a.id, a.holder_type, a.unit
            """
        )
        per_unit: dict[str, int] = {}
        for r in rows:
            per_unit[r["unit"]] = per_unit.get(r["unit"], 0) + r["balance"]
            if r["holder_type"] != "program":
                assert r["balance"] >= 0, dict(r)
        assert all(total == 0 for total in per_unit.values()), per_unit


@pytest.fixture
async def env(namespace: Namespace) -> AsyncIterator[Env]:
    await migrate(namespace.database_url, "reward", "reward_service")
    key, entry = new_api_key("acme")
    other_key, other_entry = new_api_key("globex")
    settings = Settings(
        **namespace.settings_env(),
        api_keys=[entry, other_entry],
        release_poll_interval_seconds=0.1,
        outbox_poll_interval_seconds=0.2,
    )
    producer = AIOKafkaProducer(bootstrap_servers=namespace.kafka_bootstrap_servers)
    await producer.start()
    db = await asyncpg.connect(namespace.database_url, server_settings={"search_path": "reward"})
    try:
        yield Env(
            namespace,
            settings,
            FakeClock(datetime.now(UTC)),
            producer,
            db,
            key,
            other_key,
        )
    finally:
        await db.close()
        await producer.stop()


def conversion(
    conversion_id: str,
    *,
    conversion_type: str = "purchase",
    first: bool = True,
    advocate_id: str = "adv_ann",
    occurred_at: datetime | None = None,
) -> ConversionAttributed:
    return ConversionAttributed(
        conversion_id=conversion_id,
        referral_id="ref_1",
        program_id="prg_1",
        advocate_id=advocate_id,
        friend_customer_id="cus_bob",
        conversion_type=conversion_type,
        order_id=None if conversion_type == "signup" else f"ord_{conversion_id}",
        amount_minor=None if conversion_type == "signup" else 5990,
        currency=None if conversion_type == "signup" else "USD",
        is_first_purchase=first,
        occurred_at=occurred_at or datetime.now(UTC),
        evidence="click",
    )


async def balances(client: httpx.AsyncClient, holder: str, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    r = await client.get(f"/v1/accounts/{holder}/balance", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["holder_id"] == holder
    return r.json()["balances"]


def usd(available: int, pending: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "unit": "USD",
            "purse": "credit",
            "available_minor": available,
            "pending_minor": pending,
            "available": f"{available / 100:.2f}",
            "pending": f"{pending / 100:.2f}",
            "debt_minor": 0,
            "in_payout_minor": 0,
        }
    ]


async def until_balance(client: httpx.AsyncClient, holder: str, expected: Any) -> None:
    async def check() -> bool:
        return bool(await balances(client, holder) == expected)

    await eventually(check)


async def test_first_purchase_is_rewarded_once_whatever_is_redelivered(env: Env) -> None:
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        assert r.status_code == 200, r.text
        rule = r.json()
        assert rule["version"] == 1 and rule["advocate_reward"]["amount"] == "20.00"

        await env.publish(conversion("cnv_signup", conversion_type="signup", first=False))
        first = await env.publish(conversion("cnv_first"))
        await env.publish(conversion("cnv_second", first=False))
        # the same event again (a relay or consumer crash), and the same conversion under a new
        # event id (a producer that re-emitted it): neither may earn a second time
        await env.republish(first)
        await env.publish(conversion("cnv_first"))
        # another workspace's event naming the same program and advocate finds no rule of its own
        await env.publish(conversion("cnv_globex"), tenant="globex")
        await env.caught_up()

        assert await balances(client, "adv_ann") == usd(2000)
        [consumer] = env.runtime.consumers
        assert (consumer.processed, consumer.duplicates, consumer.dead_lettered) == (5, 1, 0)

        assert await env.db.fetchval("SELECT count(*) FROM rewards") == 1
        assert await env.db.fetchval("SELECT count(*) FROM transfers") == 1
        await env.assert_ledger_balances()

        events = await env.reward_events()
        assert [e["type"] for e in events] == ["reward.available.v1"]
        [available] = events
        assert available["key"] == "adv_ann" and available["tenantid"] == "acme"
        assert available["data"] | {"reward_id": None} == {
            "reward_id": None,
            "program_id": "prg_1",
            "advocate_id": "adv_ann",
            "holder_id": "adv_ann",
            "role": "advocate",
            "conversion_id": "cnv_first",
            "kind": "credit",
            "amount": 2000,
            "unit": "USD",
            "rule_version": 1,
            "trigger": "first_purchase",
        }

        # the other workspace sees none of it
        assert await balances(client, "adv_ann", env.other_key) == []
        r = await client.get(
            "/v1/programs/prg_1/reward-rule",
            headers={"Authorization": f"Bearer {env.other_key}"},
        )
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


async def test_the_version_in_force_at_occurred_at_applies(env: Env) -> None:
    t0 = env.clock.now
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        assert r.status_code == 200 and r.json()["version"] == 1
        env.clock.advance(timedelta(hours=1))
        r = await client.put(
            "/v1/programs/prg_1/reward-rule",
            json={
                "advocate_reward": {"amount_minor": 5000, "currency": "USD"},
                "trigger": "first_purchase",
            },
        )
        assert r.status_code == 200 and r.json()["version"] == 2

        await env.publish(
            conversion("c1", advocate_id="adv_a", occurred_at=t0 + timedelta(minutes=30))
        )
        await env.publish(
            conversion("c2", advocate_id="adv_b", occurred_at=t0 + timedelta(hours=2))
        )
        await env.publish(
            conversion("c3", advocate_id="adv_c", occurred_at=t0 - timedelta(hours=1))
        )
        await env.caught_up()

        assert await balances(client, "adv_a") == usd(2000)
        assert await balances(client, "adv_b") == usd(5000)
        assert await balances(client, "adv_c") == []
        await env.assert_ledger_balances()


async def test_held_reward_is_released_after_a_restart_when_due(env: Env) -> None:
    rule = {
        "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
        "trigger": "every_purchase",
        "hold_days": 30,
    }
    occurred_at = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json=rule)
        assert r.status_code == 200 and r.json()["hold_days"] == 30
        await env.publish(conversion("cnv_1", first=False, occurred_at=occurred_at))
        await env.caught_up()
        assert await balances(client, "adv_ann") == usd(0, pending=2000)
        [releaser] = env.runtime.workers
        assert isinstance(releaser, RewardReleaser)
        assert await releaser.release_once() == 0  # not due yet: nothing moves
        assert await balances(client, "adv_ann") == usd(0, pending=2000)
        [pending] = await env.reward_events()
        assert pending["type"] == "reward.pending.v1"
        assert datetime.fromisoformat(pending["data"]["available_at"]) == occurred_at + timedelta(
            days=30
        )

    # the service is down while the hold runs out; the schedule is in Postgres, not in memory
    env.clock.advance(timedelta(days=30, seconds=2))
    async with env.serve() as client:
        await until_balance(client, "adv_ann", usd(2000))
        await env.caught_up()
        events = await env.reward_events()
        assert [e["type"] for e in events] == ["reward.pending.v1", "reward.available.v1"]
        assert events[0]["data"]["reward_id"] == events[1]["data"]["reward_id"]
        legs = await env.db.fetch("SELECT leg FROM transfers ORDER BY created_at")
        assert [r["leg"] for r in legs] == ["earn", "release"]
        await env.assert_ledger_balances()


async def test_rule_api_versions_and_answers_bad_input_with_problem_json(env: Env) -> None:
    async with env.serve() as client:
        r = await client.get("/v1/programs/prg_1/reward-rule")
        assert r.status_code == 404 and r.json()["field"] == "program_id"

        bad: list[tuple[dict[str, Any], str]] = [
            (
                {"advocate_reward": {"amount_minor": 2000, "currency": "XYZ"}, "trigger": "signup"},
                "advocate_reward.currency",
            ),
            (
                {"advocate_reward": {"amount_minor": 0, "currency": "USD"}, "trigger": "signup"},
                "advocate_reward.amount_minor",
            ),
            (
                {"advocate_reward": {"amount_minor": -100, "currency": "USD"}, "trigger": "signup"},
                "advocate_reward.amount_minor",
            ),
            (
                {
                    "advocate_reward": {"amount_minor": 19.99, "currency": "USD"},
                    "trigger": "signup",
                },
                "advocate_reward.amount_minor",
            ),
            (
                {"advocate_reward": {"amount_minor": 2000, "currency": "USD"}, "trigger": "weekly"},
                "trigger",
            ),
            (
                {
                    "advocate_reward": {"amount_minor": 2000, "currency": "USD"},
                    "trigger": "signup",
                    "hold_days": -1,
                },
                "hold_days",
            ),
            ({"trigger": "signup"}, "advocate_reward"),
        ]
        for body, field in bad:
            r = await client.put("/v1/programs/prg_1/reward-rule", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["field"] == field, (body, r.json())
        r = await client.put(
            "/v1/programs/prg_1/reward-rule",
            json=RULE_20_USD_FIRST_PURCHASE,
            headers={"Authorization": "Bearer nope"},
        )
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert await env.db.fetchval("SELECT count(*) FROM rule_versions") == 0

        v1 = await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        again = await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        assert again.status_code == 200 and again.json() == v1.json()  # a retried PUT adds nothing
        v2 = await client.put(
            "/v1/programs/prg_1/reward-rule", json={**RULE_20_USD_FIRST_PURCHASE, "hold_days": 30}
        )
        assert v2.json()["version"] == 2 and v2.json()["id"] != v1.json()["id"]
        current = (await client.get("/v1/programs/prg_1/reward-rule")).json()
        assert current == v2.json()
        assert current["valid_from"] >= v1.json()["valid_from"]

        # another workspace's rule for the same program id is its own, from version 1
        globex = {"Authorization": f"Bearer {env.other_key}"}
        r = await client.put(
            "/v1/programs/prg_1/reward-rule",
            json={"advocate_reward": {"amount_minor": 500, "currency": "JPY"}, "trigger": "signup"},
            headers=globex,
        )
        assert r.status_code == 200 and r.json()["version"] == 1
        assert r.json()["advocate_reward"] == {
            "amount_minor": 500,
            "currency": "JPY",
            "amount": "500",
        }
        assert (await client.get("/v1/programs/prg_1/reward-rule")).json() == v2.json()


async def test_ledger_rows_are_append_only(env: Env) -> None:
    async with env.serve() as client:
        await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        await env.publish(conversion("cnv_1"))
        await env.caught_up()
    for statement in (
        "UPDATE transfers SET amount = amount * 2",
        "DELETE FROM transfers",
        "UPDATE rule_versions SET hold_days = 1",
        "DELETE FROM accounts",
    ):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await env.db.execute(statement)
    assert await env.db.fetchval("SELECT sum(amount) FROM transfers") == 2000


async def test_concurrent_releasers_release_each_reward_once(env: Env) -> None:
    """Several replicas' releasers on the same due rewards: SKIP LOCKED shares them out, and the
    derived transfer ids would refuse a second release anyway."""
    pool = await create_pool(
        env.ns.database_url, schema="reward", application_name="test", min_size=1, max_size=8
    )
    try:
        now = env.clock.now
        async with pool.acquire() as conn, conn.transaction():
            await handlers.put_reward_rule(
                conn, "acme", "prg_1", _held_rule(), now - timedelta(days=60)
            )
        for i in range(40):
            payload = conversion(
                f"cnv_{i}", advocate_id=f"adv_{i % 7}", occurred_at=now - timedelta(days=31)
            )
            event = new_event(payload, source="/test", tenant_id="acme")
            async with pool.acquire() as conn, conn.transaction():
                await handlers.on_conversion_attributed(conn, event, payload)

        async def releaser() -> int:
            total = 0
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    released = await handlers.release_due_rewards(conn, now, limit=3)
                if not released:
                    return total
                total += released

        counts = await asyncio.gather(*(releaser() for _ in range(6)))
        assert sum(counts) == 40
        assert await env.db.fetchval("SELECT count(*) FROM rewards WHERE state = 'available'") == 40
        assert await env.db.fetchval("SELECT count(*) FROM transfers WHERE leg = 'release'") == 40
        assert (
            await env.db.fetchval(
                "SELECT count(*) FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb->>'type'"
                " = 'reward.available.v1'"
            )
            == 40
        )
        await env.assert_ledger_balances()
    finally:
        await pool.close()


def _held_rule() -> domain.RuleDefinition:
    side = domain.SideReward(
        role="advocate", trigger="every_purchase", amount=domain.Amount(unit="EUR", fixed=250)
    )
    return domain.RuleDefinition(hold_days=30, rewards=(side,))


async def test_migrations_downgrade_and_upgrade_cleanly(env: Env) -> None:
    await asyncio.to_thread(
        migrations.downgrade, env.ns.database_url, "reward", "reward_service", "base"
    )
    tables = await env.db.fetchval(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'reward'"
        " AND table_name <> 'alembic_version'"
    )
    assert tables == 0
    await migrate(env.ns.database_url, "reward", "reward_service")
    assert await env.db.fetchval("SELECT count(*) FROM transfers") == 0

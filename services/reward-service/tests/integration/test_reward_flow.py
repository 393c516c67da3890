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
from referral_events.contracts.attribution import ConversionAttributed, ConversionRefunded
from referral_events.contracts.link import AdvocateAttributesChanged, ProgramAudienceChanged
from referral_events.envelope import EventPayload
from reward_service.config import Settings
from reward_service.earning import handlers as earning
from reward_service.main import create_app
from reward_service.programs import repository as programs
from reward_service.rules import domain as rules
from reward_service.rules import handlers as rule_handlers
from reward_service.workers import RewardReleaser
from servicekit import migrations
from servicekit.db import create_pool
from servicekit.problems import pointer
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
        self, payload: EventPayload, tenant: str = "acme", event_id: str | None = None
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


# The programs these tests write rules for, known to both workspaces as link-service's
# program.created events would have made them (a write under a program not heard of answers 409:
# test_unknown_parents.py).
PROGRAMS = ("prg_1", "prg_bad", "prg_box", "prg_drop", "prg_p", "prg_shop", "prg_t", "prg_z")


async def heard_of(
    db: asyncpg.Connection, program_id: str, tenant: str = "acme", advocates: tuple[str, ...] = ()
) -> None:
    """The program's (and advocates') events as link-service would have sent them, handled."""
    await programs.add_program(db, tenant, program_id)
    for advocate in advocates:
        await programs.add_advocate(db, tenant, advocate, program_id)


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
    for program in PROGRAMS:
        for tenant in ("acme", "globex"):
            await heard_of(db, program, tenant)
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
            "unit_kind": "currency",
            "purse": "credit",
            "available_minor": available,
            "pending_minor": pending,
            "available": f"{available / 100:.2f}",
            "pending": f"{pending / 100:.2f}",
            "available_display": f"{available / 100:,.2f} USD",
            "pending_display": f"{pending / 100:,.2f} USD",
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

        # the other workspace sees none of it: no such holder there
        r = await client.get(
            "/v1/accounts/adv_ann/balance", headers={"Authorization": f"Bearer {env.other_key}"}
        )
        assert r.status_code == 404, r.text
        r = await client.get(
            "/v1/programs/prg_1/reward-rule",
            headers={"Authorization": f"Bearer {env.other_key}"},
        )
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


async def test_the_version_in_force_at_occurred_at_applies(env: Env) -> None:
    t0 = env.clock.now
    await heard_of(env.db, "prg_1", advocates=("adv_c",))  # enrolled, never rewarded
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
        [releaser] = [w for w in env.runtime.workers if isinstance(w, RewardReleaser)]
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
        assert r.status_code == 404 and r.json()["field"] == "/program_id"

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
            assert r.json()["field"] == pointer(field), (body, r.json())
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
            await rule_handlers.put_reward_rule(
                conn, "acme", "prg_1", _held_rule(), now - timedelta(days=60)
            )
        for i in range(40):
            payload = conversion(
                f"cnv_{i}", advocate_id=f"adv_{i % 7}", occurred_at=now - timedelta(days=31)
            )
            event = new_event(payload, source="/test", tenant_id="acme")
            async with pool.acquire() as conn, conn.transaction():
                await earning.on_conversion_attributed(conn, event, payload)

        async def releaser() -> int:
            total = 0
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    released = await earning.release_due_rewards(conn, now, limit=3)
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


def _held_rule() -> rules.RuleDefinition:
    side = rules.SideReward(
        role="advocate", trigger="every_purchase", amount=rules.Amount(unit="EUR", fixed=250)
    )
    return rules.RuleDefinition(hold_days=30, rewards=(side,))


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


# --- issue #6: two-sided rules, caps, holds over a restart, refunds, spending -------------------

DROPBOX_RULE = {
    "advocate": {"trigger": "signup", "amount": {"quantity": 500, "unit": "MB"}},
    "friend": {"trigger": "signup", "amount": {"quantity": 500, "unit": "MB"}},
    "caps": [{"period": "lifetime", "max_amount": 16 * 1024}],
}
GIVE_20_GET_20 = {
    "hold_days": 30,
    "advocate": {"trigger": "first_purchase", "amount": {"amount_minor": 2000, "currency": "USD"}},
    "friend": {"trigger": "first_purchase", "amount": {"amount_minor": 2000, "currency": "USD"}},
}


def referral(
    n: int | str,
    *,
    program: str,
    advocate: str,
    conversion_type: str = "purchase",
    occurred_at: datetime,
    order: int = 5990,
) -> ConversionAttributed:
    purchase = conversion_type == "purchase"
    return ConversionAttributed(
        conversion_id=f"cnv_{program}_{n}",
        referral_id=f"ref_{program}_{n}",
        program_id=program,
        advocate_id=advocate,
        friend_customer_id=f"cus_{program}_{n}",
        conversion_type=conversion_type,
        order_id=f"ord_{n}" if purchase else None,
        amount_minor=order if purchase else None,
        currency="USD" if purchase else None,
        is_first_purchase=purchase,
        occurred_at=occurred_at,
        evidence="code",
    )


def units(body: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {b["unit"]: (b["available_minor"], b["pending_minor"]) for b in body}


async def test_dropbox_and_give_20_get_20_rules_give_exact_balances_across_a_restart(
    env: Env,
) -> None:
    t0 = env.clock.now
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_drop/reward-rule", json=DROPBOX_RULE)
        assert r.status_code == 200, r.text
        r = await client.put("/v1/programs/prg_shop/reward-rule", json=GIVE_20_GET_20)
        assert r.status_code == 200, r.text
        assert r.json()["friend"]["amount"]["fixed"] == 2000

        at = t0 + timedelta(seconds=1)
        for i in range(35):  # 35 * 500 MB asked; the advocate's cap is 16 GB = 16384 MB
            await env.publish(
                referral(
                    i,
                    program="prg_drop",
                    advocate="adv_drop",
                    conversion_type="signup",
                    occurred_at=at,
                )
            )
        await env.publish(referral("bob", program="prg_shop", advocate="adv_ann", occurred_at=at))
        await env.caught_up()

        assert units(await balances(client, "adv_drop")) == {"MB": (16_384, 0)}
        # quantities carry their unit and a display form (issue 17: raw numbers before)
        [drop] = await balances(client, "cus_prg_drop_0")
        assert (drop["unit_kind"], drop["available_display"]) == ("quantity", "500 MB")
        for i in (0, 17, 34):  # every friend gets their 500 MB, cap or no cap
            assert units(await balances(client, f"cus_prg_drop_{i}")) == {"MB": (500, 0)}
        assert units(await balances(client, "adv_ann")) == {"USD": (0, 2000)}
        assert units(await balances(client, "cus_prg_shop_bob")) == {"USD": (0, 2000)}

        events = await env.reward_events()
        capped = [e["data"] for e in events if e["type"] == "reward.capped.v1"]
        assert [(c["granted_amount"], c["amount"], c["reason"], c["period"]) for c in capped] == [
            (384, 116, "advocate_amount_cap", "lifetime"),
            (0, 500, "advocate_amount_cap", "lifetime"),
            (0, 500, "advocate_amount_cap", "lifetime"),
        ]
        assert {c["role"] for c in capped} == {"advocate"}
        pending = [e for e in events if e["type"] == "reward.pending.v1"]
        assert {(e["data"]["role"], e["data"]["holder_id"]) for e in pending} == {
            ("advocate", "adv_ann"),
            ("friend", "cus_prg_shop_bob"),
        }
        # the capped rewards are on record with their reason, not dropped
        rows = await env.db.fetch(
            "SELECT state, amount, requested_amount, capped_reason FROM rewards"
            " WHERE holder_id = 'adv_drop' AND capped_reason IS NOT NULL ORDER BY amount DESC"
        )
        assert [tuple(r) for r in rows] == [
            ("available", 384, 500, "advocate_amount_cap"),
            ("capped", 0, 500, "advocate_amount_cap"),
            ("capped", 0, 500, "advocate_amount_cap"),
        ]

        # a minute before the hold ends nothing moves
        env.clock.now = at + timedelta(days=30) - timedelta(minutes=1)
        [releaser] = [w for w in env.runtime.workers if isinstance(w, RewardReleaser)]
        assert isinstance(releaser, RewardReleaser)
        assert await releaser.release_once() == 0

    # the service is down when the hold ends, and comes back 20 s later
    due = at + timedelta(days=30)
    env.clock.now = due + timedelta(seconds=20)
    async with env.serve() as client:
        await until_balance(client, "adv_ann", usd(2000))
        await until_balance(client, "cus_prg_shop_bob", usd(2000))
        released = await env.db.fetch(
            "SELECT released_at FROM rewards WHERE program_id = 'prg_shop'"
        )
        assert len(released) == 2
        assert all(due <= r["released_at"] <= due + timedelta(minutes=1) for r in released)
        await env.caught_up()
        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text
        await env.assert_ledger_balances()


async def test_refunds_redemptions_and_statement_over_kafka_and_http(env: Env) -> None:
    at = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        rule = {
            "hold_days": 30,
            "advocate": {
                "trigger": "every_purchase",
                "amount": {"percent": "10", "currency": "USD", "rounding": "half_even"},
            },
        }
        assert (await client.put("/v1/programs/prg_p/reward-rule", json=rule)).status_code == 200
        await env.publish(
            referral(1, program="prg_p", advocate="adv_p", occurred_at=at, order=10_000)
        )
        await env.publish(
            referral(2, program="prg_p", advocate="adv_p", occurred_at=at, order=4_000)
        )
        await env.caught_up()
        assert units(await balances(client, "adv_p")) == {"USD": (0, 1400)}

        def refund(n: int, rid: str, amount: int, total: int, order: int) -> ConversionRefunded:
            return ConversionRefunded(
                conversion_id=f"cnv_prg_p_{n}",
                refund_id=rid,
                program_id="prg_p",
                advocate_id="adv_p",
                friend_customer_id=f"cus_prg_p_{n}",
                conversion_type="purchase",
                amount_minor=amount,
                currency="USD",
                refunded_total_minor=total,
                full=total >= order,
                refunded_at=at + timedelta(days=1),
            )

        # inside the hold: a quarter of order 1 refunded (the 10.00 reward scales to 7.50)
        await env.publish(refund(1, "rf_1", 2500, 2500, 10_000))
        await env.caught_up()
        assert units(await balances(client, "adv_p")) == {"USD": (0, 1150)}

        env.clock.now = at + timedelta(days=30, seconds=5)
        await until_balance(client, "adv_p", usd(1150))

        # after the hold: order 2 fully refunded claws its 4.00 back
        await env.publish(refund(2, "rf_2", 4000, 4000, 4000))
        await env.caught_up()
        assert units(await balances(client, "adv_p")) == {"USD": (750, 0)}
        types = [e["type"] for e in await env.reward_events()]
        assert types.count("reward.voided.v1") == 1 and types.count("reward.clawed_back.v1") == 1

        # redemption: idempotent, 409 when short, and nothing posted then
        headers = {"Idempotency-Key": "order-77"}
        body = {"amount_minor": 500, "unit": "usd", "reference": "order 77"}
        r = await client.post("/v1/accounts/adv_p/redemptions", json=body, headers=headers)
        assert r.status_code == 201, r.text
        again = await client.post("/v1/accounts/adv_p/redemptions", json=body, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
        r = await client.post(
            "/v1/accounts/adv_p/redemptions",
            json={**body, "amount_minor": 251},
            headers={"Idempotency-Key": "order-78"},
        )
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] == "/amount_minor"
        r = await client.post(
            "/v1/accounts/adv_p/redemptions", json={**body, "amount_minor": 1}, headers=headers
        )
        assert r.status_code == 422 and r.json()["field"] == "/Idempotency-Key"
        r = await client.post("/v1/accounts/adv_p/redemptions", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert units(await balances(client, "adv_p")) == {"USD": (250, 0)}

        # the statement: every entry linked to its cause, paged with a cursor
        r = await client.get("/v1/accounts/adv_p/statement", params={"limit": 3})
        page1 = r.json()
        assert r.status_code == 200 and page1["next_cursor"] is not None
        r = await client.get(
            "/v1/accounts/adv_p/statement", params={"cursor": page1["next_cursor"]}
        )
        page2 = r.json()
        entries = page1["items"] + page2["items"]
        assert page2["next_cursor"] is None
        assert sum(e["amount_minor"] for e in entries if e["account"] == "available") == 250
        assert {e["leg"] for e in entries} == {"earn", "void", "release", "clawback", "redeem"}
        assert {e["conversion_id"] for e in entries if e["leg"] == "earn"} == {
            "cnv_prg_p_1",
            "cnv_prg_p_2",
        }
        assert {e["cause"] for e in entries if e["leg"] in ("void", "clawback")} == {
            "rf_1",
            "rf_2",
        }
        assert len({(e["seq"], e["account"]) for e in entries}) == len(entries)
        assert all(e["amount_display"] == f"{e['amount']} USD" for e in entries), entries

        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text
        await env.caught_up()
        types = [e["type"] for e in await env.reward_events()]
        assert types.count("reward.redeemed.v1") == 1


async def test_tiers_milestones_budget_coupons_and_payouts(env: Env) -> None:
    at = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        r = await client.post(
            "/v1/programs/prg_t/coupon-pools",
            json={"name": "10% off", "low_threshold": 1, "codes": ["AAA", "BBB", "AAA"]},
        )
        assert r.status_code == 201 and (r.json()["total"], r.json()["added"]) == (2, 2)
        pool_id = r.json()["id"]
        # Found by the attack suite (schemathesis): a threshold past int4 answered 500.
        r = await client.post(
            "/v1/programs/prg_t/coupon-pools", json={"name": "x", "low_threshold": 2**31}
        )
        assert r.status_code == 422 and "low_threshold" in r.json()["field"], r.text
        rule = {
            "advocate": {
                "trigger": "first_purchase",
                "kind": "cash",
                "amount": {"amount_minor": 1000, "currency": "USD"},
                "tiers": [
                    {
                        "min_referrals": 1,
                        "max_referrals": 2,
                        "amount": {"amount_minor": 1000, "currency": "USD"},
                    },
                    {"min_referrals": 3, "amount": {"amount_minor": 1500, "currency": "USD"}},
                ],
            },
            "friend": {"trigger": "first_purchase", "kind": "coupon", "coupon_pool_id": pool_id},
            "milestones": [
                {
                    "referrals": 3,
                    "amount": {"amount_minor": 5000, "currency": "USD"},
                    "kind": "cash",
                }
            ],
            "budget": {"amount": 10_000, "unit": "USD"},
        }
        r = await client.put("/v1/programs/prg_t/reward-rule", json=rule)
        assert r.status_code == 200, r.text
        for i in range(4):
            await env.publish(referral(i, program="prg_t", advocate="adv_t", occurred_at=at))
        await env.caught_up()

        # 10 + 10 + 15 + the 50 bonus at 3 = 85.00; the 4th referral's 15.00 meets the
        # 100.00 budget with 15.00 left: granted in full. Cash is its own purse.
        [cash] = await balances(client, "adv_t")
        assert (cash["purse"], cash["available_minor"]) == ("cash", 10_000)
        events = await env.reward_events()
        [milestone] = [e["data"] for e in events if e["type"] == "milestone.reached.v1"]
        assert (milestone["referral_count"], milestone["amount"]) == (3, 5000)
        coupons = [e["data"] for e in events if e["type"] == "coupon.allocated.v1"]
        assert sorted(c["coupon_code"] for c in coupons) == ["AAA", "BBB"]
        assert {c["holder_id"] for c in coupons} <= {f"cus_prg_t_{i}" for i in range(4)}
        low = [e["data"]["remaining"] for e in events if e["type"] == "coupon_pool.low.v1"]
        assert sorted(low) == [0, 0, 0, 1]  # 1 left, none left, then two friends found none
        capped = [e["data"] for e in events if e["type"] == "reward.capped.v1"]
        assert sorted(c["reason"] for c in capped) == ["coupon_pool_empty", "coupon_pool_empty"]

        # one more referral: the budget is spent, so it is capped with that reason
        await env.publish(referral(9, program="prg_t", advocate="adv_t", occurred_at=at))
        await env.caught_up()
        capped = [e["data"] for e in await env.reward_events() if e["type"] == "reward.capped.v1"]
        assert "program_budget" in {c["reason"] for c in capped}

        # payouts: cash above 50.00 is batched, exported, then paid or failed per line
        r = await client.post("/v1/payouts", json={"currency": "USD", "threshold_minor": 5000})
        assert r.status_code == 201, r.text
        batch = r.json()
        [line] = batch["lines"]
        assert (line["holder_id"], line["amount_minor"], line["status"]) == (
            "adv_t",
            10_000,
            "pending",
        )
        [cash] = await balances(client, "adv_t")
        assert (cash["available_minor"], cash["in_payout_minor"]) == (0, 10_000)
        r = await client.get(f"/v1/payouts/{batch['id']}/export.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        header, row = r.text.strip().splitlines()
        assert header.startswith("payout_id,batch_id,holder_type,holder_id,amount,currency")
        assert f"{line['id']},{batch['id']},advocate,adv_t,100.00,USD,10000,pending" == row
        r = await client.post(
            f"/v1/payouts/{batch['id']}/lines/{line['id']}",
            json={"status": "failed", "reason": "bank account closed"},
        )
        assert r.status_code == 200 and r.json()["status"] == "failed"
        [cash] = await balances(client, "adv_t")
        assert (cash["available_minor"], cash["in_payout_minor"]) == (10_000, 0)
        r = await client.post(
            f"/v1/payouts/{batch['id']}/lines/{line['id']}", json={"status": "paid"}
        )
        assert r.status_code == 409
        # a second batch pays it
        batch2 = (
            await client.post("/v1/payouts", json={"currency": "USD", "threshold_minor": 5000})
        ).json()
        [line2] = batch2["lines"]
        r = await client.post(
            f"/v1/payouts/{batch2['id']}/lines/{line2['id']}",
            json={"status": "paid", "reference": "wire-1"},
        )
        assert r.status_code == 200
        [cash] = await balances(client, "adv_t")
        assert (cash["available_minor"], cash["in_payout_minor"]) == (0, 0)
        r = await client.post("/v1/payouts", json={"currency": "USD", "threshold_minor": 5000})
        assert r.status_code == 409
        await env.caught_up()
        types = [e["type"] for e in await env.reward_events()]
        assert [
            types.count(t) for t in ("payout.created.v1", "payout.paid.v1", "payout.failed.v1")
        ] == [2, 1, 1]
        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text


async def test_bad_rules_and_requests_answer_problem_json_naming_the_field(env: Env) -> None:
    usd_amount = {"amount_minor": 1000, "currency": "USD"}
    bad: list[tuple[dict[str, Any], str]] = [
        (
            {"advocate": {"trigger": "signup", "amount": {"amount_minor": -1, "currency": "USD"}}},
            "advocate.amount.amount_minor",
        ),
        (
            {"advocate": {"trigger": "signup", "amount": {"amount_minor": 1, "currency": "ABC"}}},
            "advocate.amount.currency",
        ),
        (
            {
                "advocate": {
                    "trigger": "every_purchase",
                    "amount": usd_amount,
                    "tiers": [
                        {"min_referrals": 1, "max_referrals": 5, "amount": usd_amount},
                        {"min_referrals": 4, "amount": usd_amount},
                    ],
                }
            },
            "advocate.tiers",
        ),
        (
            {"friend": {"trigger": "signup", "kind": "coupon", "coupon_pool_id": "cpl_nope"}},
            "friend.coupon_pool_id",
        ),
        ({**DROPBOX_RULE, "budget": {"amount": 100, "unit": "QQQ"}}, "budget.unit"),
    ]
    async with env.serve() as client:
        for body, field in bad:
            r = await client.put("/v1/programs/prg_bad/reward-rule", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["field"] == pointer(field), (body, r.json())
        r = await client.post(
            "/v1/accounts/adv_x/redemptions",
            json={"amount_minor": -100, "unit": "USD"},
            headers={"Idempotency-Key": "k"},
        )
        assert r.status_code == 422 and r.json()["field"] == "/amount_minor"
        r = await client.post(
            "/v1/accounts/adv_x/redemptions",
            json={"amount_minor": 100, "unit": "XQZ"},
            headers={"Idempotency-Key": "k"},
        )
        assert r.status_code == 422 and r.json()["field"] == "/unit"
        r = await client.post("/v1/payouts", json={"currency": "ABC", "threshold_minor": 5})
        assert r.status_code == 422 and r.json()["field"] == "/currency"
        r = await client.get("/v1/accounts/adv_x/statement", params={"cursor": "-1"})
        assert r.status_code == 422 and r.json()["field"] == "/cursor"
        r = await client.get("/v1/payouts/pob_nope")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert await env.db.fetchval("SELECT count(*) FROM rule_versions") == 0


# --- segments: rule variants on the attributes in force when the conversion happened -----------

SEGMENTS = [
    {"name": "basic", "condition": {"attribute": "plan", "equals": "basic"}},
    {"name": "plus", "condition": {"attribute": "plan", "in": ["plus"]}},
    {"name": "vip", "condition": {"has_tag": "vip"}},
]
BASIC = {"trigger": "signup", "amount": {"quantity": 500, "unit": "MB"}}
PLUS = {"trigger": "signup", "amount": {"quantity": 1024, "unit": "MB"}}
DROPBOX_BY_PLAN = {
    "variants": [
        {
            "segment": "basic",
            "advocate": BASIC,
            "caps": [{"period": "lifetime", "max_amount": 16 * 1024}],
        },
        {
            "segment": "plus",
            "advocate": PLUS,
            "caps": [{"period": "lifetime", "max_amount": 32 * 1024}],
        },
    ],
    # nobody is outside both, but a default is the rule's own sides
    "advocate": BASIC,
    "caps": [{"period": "lifetime", "max_amount": 16 * 1024}],
}


async def _link_event(env: Env, payload: EventPayload, key: str) -> None:
    event = new_event(payload, source="/services/link-service", tenant_id="acme")
    await env.producer.send_and_wait(
        env.ns.topic_prefix + "link.events", event.to_json(), key=key.encode()
    )


async def _plan(env: Env, advocate: str, change: int, at: datetime, **changes: Any) -> None:
    await _link_event(
        env,
        AdvocateAttributesChanged(
            advocate_id=advocate,
            program_id="prg_box",
            change=change,
            changes=changes,
            effective_at=at,
        ),
        advocate,
    )


async def _rows(env: Env, sql: str, n: int) -> None:
    """Waits for `sql`'s count to reach n (wait_caught_up sees only partitions with commits)."""

    async def reached() -> bool:
        return bool(await env.db.fetchval(sql) >= n)

    await eventually(reached)


CHANGES = "SELECT count(*) FROM advocate_attribute_changes"
REWARDS = "SELECT count(*) FROM rewards"


async def _referrals(env: Env, advocate: str, numbers: range, start: datetime) -> None:
    for i in numbers:
        await env.publish(
            referral(
                f"{advocate}_{i}",
                program="prg_box",
                advocate=advocate,
                conversion_type="signup",
                occurred_at=start + timedelta(seconds=i),
            )
        )


async def test_dropbox_by_plan_basic_plus_and_moves_between_them(env: Env) -> None:
    t0 = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        await _link_event(
            env,
            ProgramAudienceChanged(program_id="prg_box", segments=SEGMENTS, version=1),
            "prg_box",
        )
        await _rows(env, "SELECT count(*) FROM program_segments", 1)
        r = await client.put("/v1/programs/prg_box/reward-rule", json=DROPBOX_BY_PLAN)
        assert r.status_code == 200, r.text
        assert [v["segment"] for v in r.json()["variants"]] == ["basic", "plus"]

        for adv, plan in (("adv_basic", "basic"), ("adv_plus", "plus"), ("adv_up", "basic")):
            await _plan(env, adv, 1, t0, plan=plan, country="DE")
        await _plan(env, "adv_down", 1, t0, plan="plus")
        # the moves, dated between the 20th and the 21st referral
        await _plan(env, "adv_up", 2, t0 + timedelta(seconds=20.5), plan="plus")
        await _plan(env, "adv_down", 2, t0 + timedelta(seconds=20.5), plan="basic")
        await _rows(env, CHANGES, 6)

        for adv in ("adv_basic", "adv_plus", "adv_up", "adv_down"):
            await _referrals(env, adv, range(1, 41), t0)
        await _rows(env, REWARDS, 160)
        await env.caught_up()

        assert units(await balances(client, "adv_basic")) == {"MB": (16 * 1024, 0)}
        assert units(await balances(client, "adv_plus")) == {"MB": (32 * 1024, 0)}
        # Basic -> Plus after 20: 20 * 500 + 20 * 1024 = 30,480 MB, under Plus's 32 GB cap,
        # which counts the 10,000 MB earned as Basic
        assert units(await balances(client, "adv_up")) == {"MB": (20 * 500 + 20 * 1024, 0)}
        # Plus -> Basic after 20: 20,480 MB is above Basic's 16 GB cap: nothing taken back,
        # nothing more granted
        assert units(await balances(client, "adv_down")) == {"MB": (20 * 1024, 0)}
        segments = await env.db.fetch(
            "SELECT advocate_id, segment, count(*) AS n FROM rewards"
            " GROUP BY advocate_id, segment ORDER BY advocate_id, segment"
        )
        assert [tuple(r) for r in segments] == [
            ("adv_basic", "basic", 40),
            ("adv_down", "basic", 20),
            ("adv_down", "plus", 20),
            ("adv_plus", "plus", 40),
            ("adv_up", "basic", 20),
            ("adv_up", "plus", 20),
        ]
        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text
        await env.assert_ledger_balances()


async def test_a_plan_change_dated_earlier_than_a_conversion_it_arrives_after(env: Env) -> None:
    """The documented rule (README, "Segments"): a reward is decided once, on the attributes
    known for the conversion's time when it is decided; a change that arrives later but is
    dated earlier applies to conversions decided after it arrives, never to one decided."""
    t0 = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        await _link_event(
            env,
            ProgramAudienceChanged(program_id="prg_box", segments=SEGMENTS, version=1),
            "prg_box",
        )
        await _rows(env, "SELECT count(*) FROM program_segments", 1)
        r = await client.put("/v1/programs/prg_box/reward-rule", json=DROPBOX_BY_PLAN)
        assert r.status_code == 200, r.text
        for adv in ("adv_first", "adv_late"):
            await _plan(env, adv, 1, t0, plan="basic")
        await _rows(env, CHANGES, 2)

        # the change arrives first, then a conversion after its effective time: Plus
        await _plan(env, "adv_first", 2, t0 + timedelta(seconds=10), plan="plus")
        await _rows(env, CHANGES, 3)
        await _referrals(env, "adv_first", range(20, 21), t0)
        await _rows(env, REWARDS, 1)
        assert units(await balances(client, "adv_first")) == {"MB": (1024, 0)}

        # the conversion arrives first (decided as Basic), then the change dated before it:
        # the decided reward stays; the next conversion is Plus
        await _referrals(env, "adv_late", range(20, 21), t0)
        await _rows(env, REWARDS, 2)
        assert units(await balances(client, "adv_late")) == {"MB": (500, 0)}
        await _plan(env, "adv_late", 2, t0 + timedelta(seconds=10), plan="plus")
        await _rows(env, CHANGES, 4)
        assert units(await balances(client, "adv_late")) == {"MB": (500, 0)}
        await _referrals(env, "adv_late", range(30, 31), t0)
        await _rows(env, REWARDS, 3)
        assert units(await balances(client, "adv_late")) == {"MB": (500 + 1024, 0)}
        await env.caught_up()
        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text


async def test_bad_variants_answer_422_naming_the_field(env: Env) -> None:
    async with env.serve() as client:
        await _link_event(
            env,
            ProgramAudienceChanged(program_id="prg_box", segments=SEGMENTS, version=1),
            "prg_box",
        )
        await _rows(env, "SELECT count(*) FROM program_segments", 1)
        for body, field in (
            ({"variants": [{"segment": "gold", "advocate": BASIC}]}, "/variants/0/segment"),
            # plus and vip could both match one advocate: they need distinct orders
            (
                {
                    "variants": [
                        {"segment": "plus", "advocate": PLUS},
                        {"segment": "vip", "advocate": PLUS},
                    ]
                },
                "/variants/1/order",
            ),
            (
                {
                    "variants": [
                        {"segment": "plus", "order": 1, "advocate": PLUS},
                        {"segment": "vip", "order": 1, "advocate": PLUS},
                    ]
                },
                "/variants/1/order",
            ),
            (
                {"variants": [{"segment": "plus", "advocate": {"trigger": "signup"}}]},
                "/variants/0/advocate/amount",
            ),
        ):
            r = await client.put("/v1/programs/prg_box/reward-rule", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["field"] == field, (body, r.json())
        ordered = {
            "variants": [
                {"segment": "vip", "order": 2, "advocate": BASIC},
                {"segment": "plus", "order": 1, "advocate": PLUS},
                {"segment": "basic", "order": 3, "advocate": BASIC},
            ]
        }
        r = await client.put("/v1/programs/prg_box/reward-rule", json=ordered)
        assert r.status_code == 200, r.text
        # basic and plus are disjoint (one plan each): they need no order between them
        r = await client.put("/v1/programs/prg_box/reward-rule", json=DROPBOX_BY_PLAN)
        assert r.status_code == 200, r.text


async def test_fifty_racing_redemptions_one_key_one_effect_and_a_short_balance_refuses_the_rest(
    env: Env,
) -> None:
    """The attack suite's races over HTTP: 50 requests with one Idempotency-Key at once post one
    redemption and all answer it alike; 50 at once with their own keys exceeding the balance:
    exactly floor(balance / amount) succeed, the rest 409, and the ledger verifies."""
    at = env.clock.now + timedelta(seconds=1)
    async with env.serve() as client:
        rule = {
            "hold_days": 0,
            "advocate": {
                "trigger": "every_purchase",
                "amount": {"amount_minor": 1000, "currency": "USD"},
            },
        }
        assert (await client.put("/v1/programs/prg_z/reward-rule", json=rule)).status_code == 200
        await env.publish(referral(1, program="prg_z", advocate="adv_z", occurred_at=at))
        await env.caught_up()
        env.clock.now = at + timedelta(seconds=5)
        await until_balance(client, "adv_z", usd(1000))

        body = {"amount_minor": 300, "unit": "USD", "reference": "one key"}

        async def redeem(key: str, amount: int) -> httpx.Response:
            return await client.post(
                "/v1/accounts/adv_z/redemptions",
                json={**body, "amount_minor": amount},
                headers={"Idempotency-Key": key},
            )

        same = await asyncio.gather(*(redeem("same-key", 300) for _ in range(50)))
        assert sorted({r.status_code for r in same}) == [200, 201], [r.text for r in same]
        assert [r.status_code for r in same].count(201) == 1
        assert len({json.dumps(r.json(), sort_keys=True) for r in same}) == 1
        assert units(await balances(client, "adv_z")) == {"USD": (700, 0)}

        many = await asyncio.gather(*(redeem(f"key-{i}", 30) for i in range(50)))
        statuses = [r.status_code for r in many]
        assert statuses.count(201) == 700 // 30 and statuses.count(409) == 50 - 700 // 30, [
            r.text for r in many if r.status_code not in (201, 409)
        ]
        assert units(await balances(client, "adv_z")) == {"USD": (700 % 30, 0)}
        assert await env.db.fetchval("SELECT count(*) FROM redemptions") == 1 + 700 // 30
        r = await client.get("/v1/admin/ledger/verify")
        assert r.status_code == 200 and r.json()["ok"], r.text
        await env.assert_ledger_balances()

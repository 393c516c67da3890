"""Unknown programs and holders (issue 17): reward-service learns of programs and advocates from
link.events. A read under one it has not heard of answers 404 `not-found`; a write under a program
it has not heard of waits a moment for the program's event, then answers 409 `conflict` with
Retry-After and writes nothing; the event arriving while the write waits lets it through.
Another workspace's program or holder is unknown in this one."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from devstack.testing import migrate
from referral_events import new_event
from referral_events.contracts.link import AdvocateEnrolled, ProgramCreated
from referral_events.envelope import EventPayload
from servicekit import migrations
from servicekit.problems import PROBLEM_BASE

from .test_reward_flow import RULE_20_USD_FIRST_PURCHASE, Env, conversion, env  # noqa: F401

pytestmark = pytest.mark.integration


async def link_event(env: Env, payload: EventPayload, tenant: str = "acme") -> None:  # noqa: F811
    """As link-service publishes it, on link.events."""
    event = new_event(payload, source="/services/link-service", tenant_id=tenant)
    await env.producer.send_and_wait(
        env.ns.topic_prefix + "link.events", event.to_json(), key=event.data["program_id"].encode()
    )


def program_created(program_id: str) -> ProgramCreated:
    return ProgramCreated(
        program_id=program_id,
        name="Give 20",
        status="active",
        landing_url="https://shop.example.com/",
        allowed_domains=["shop.example.com"],
    )


def enrolled(advocate_id: str, program_id: str) -> AdvocateEnrolled:
    return AdvocateEnrolled(advocate_id=advocate_id, program_id=program_id, customer_id="cus_a")


def assert_problem(r: httpx.Response, status: int, kind: str, field: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["type"], body["field"]) == (PROBLEM_BASE + kind, field), body


async def test_writes_wait_for_the_program_then_409_and_reads_404_until_heard_of(
    env: Env,  # noqa: F811
) -> None:
    env.settings = env.settings.model_copy(update={"program_event_wait_seconds": 0.3})
    pool = {"name": "spring", "low_threshold": 0, "codes": ["C1"]}
    async with env.serve() as client:
        # nothing heard of prg_new: every read under it or under adv_new is 404
        for url, field in (
            ("/v1/programs/prg_new/coupon-pools", "/program_id"),
            ("/v1/programs/prg_new/reward-rule", "/program_id"),
            ("/v1/accounts/adv_new/balance", "/holder_id"),
            ("/v1/accounts/adv_new/statement", "/holder_id"),
            ("/v1/accounts/adv_new/redemptions", "/holder_id"),
        ):
            assert_problem(await client.get(url), 404, "not-found", field)
        r = await client.post(
            "/v1/accounts/adv_new/redemptions",
            json={"amount_minor": 1, "unit": "USD"},
            headers={"Idempotency-Key": "k1"},
        )
        assert_problem(r, 404, "not-found", "/holder_id")

        # writes under it: 409 with Retry-After after the wait, and nothing written
        for r in (
            await client.put("/v1/programs/prg_new/reward-rule", json=RULE_20_USD_FIRST_PURCHASE),
            await client.post("/v1/programs/prg_new/coupon-pools", json=pool),
        ):
            assert_problem(r, 409, "conflict", "/program_id")
            assert r.headers["retry-after"] == "1"
        assert await env.db.fetchval("SELECT count(*) FROM rule_versions") == 0
        assert await env.db.fetchval("SELECT count(*) FROM coupon_pools") == 0

        # the program and the advocate arrive (twice: the copy is idempotent)
        for _ in range(2):
            await link_event(env, program_created("prg_new"))
            await link_event(env, enrolled("adv_new", "prg_new"))
        await env.caught_up()
        known = "SELECT count(*) FROM {} WHERE program_id = 'prg_new'"
        assert await env.db.fetchval(known.format("programs")) == 1
        assert await env.db.fetchval(known.format("advocates")) == 1

        r = await client.put("/v1/programs/prg_new/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        assert r.status_code == 200, r.text
        r = await client.post("/v1/programs/prg_new/coupon-pools", json=pool)
        assert r.status_code == 201, r.text
        r = await client.get("/v1/programs/prg_new/coupon-pools")
        assert r.status_code == 200 and len(r.json()["items"]) == 1
        r = await client.get("/v1/accounts/adv_new/balance")
        assert r.status_code == 200 and r.json()["balances"] == [], r.text
        r = await client.get("/v1/accounts/adv_new/statement")
        assert r.status_code == 200 and r.json()["items"] == [], r.text
        r = await client.get("/v1/accounts/adv_new/redemptions")
        assert r.status_code == 200 and r.json()["items"] == [], r.text

        # another workspace has heard of neither
        globex = {"Authorization": f"Bearer {env.other_key}"}
        r = await client.get("/v1/programs/prg_new/coupon-pools", headers=globex)
        assert_problem(r, 404, "not-found", "/program_id")
        r = await client.get("/v1/accounts/adv_new/balance", headers=globex)
        assert_problem(r, 404, "not-found", "/holder_id")
        r = await client.put(
            "/v1/programs/prg_new/reward-rule", json=RULE_20_USD_FIRST_PURCHASE, headers=globex
        )
        assert_problem(r, 409, "conflict", "/program_id")


async def test_a_rule_written_straight_after_creating_the_program_waits_for_its_event(
    env: Env,  # noqa: F811
) -> None:
    async with env.serve() as client:
        put = asyncio.create_task(
            client.put("/v1/programs/prg_soon/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        )
        await asyncio.sleep(0.5)
        assert not put.done()  # waiting for the program's event
        await link_event(env, program_created("prg_soon"))
        r = await asyncio.wait_for(put, 30)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1


async def test_a_friend_holding_an_account_is_known_without_an_advocate_event(env: Env) -> None:  # noqa: F811
    """A friend holds as a customer of the program, whom link-service need not have enrolled:
    their account makes them known."""
    rule = {
        "friend": {"trigger": "first_purchase", "amount": {"amount_minor": 500, "currency": "USD"}}
    }
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json=rule)
        assert r.status_code == 200, r.text
        assert_problem(
            await client.get("/v1/accounts/cus_bob/balance"), 404, "not-found", "/holder_id"
        )
        await env.publish(conversion("cnv_friend"))
        await env.caught_up()
        r = await client.get("/v1/accounts/cus_bob/balance")
        assert r.status_code == 200, r.text
        assert [b["available"] for b in r.json()["balances"]] == ["5.00"]


async def test_the_migration_backfills_what_the_service_already_acted_on(env: Env) -> None:  # noqa: F811
    """Before revision 0012 nothing was heard of: the programs with a rule and the advocates
    with a reward existed upstream, and stay readable after the upgrade."""
    async with env.serve() as client:
        r = await client.put("/v1/programs/prg_1/reward-rule", json=RULE_20_USD_FIRST_PURCHASE)
        assert r.status_code == 200, r.text
        await env.publish(conversion("cnv_1"))
        await env.caught_up()
    await asyncio.to_thread(
        migrations.downgrade, env.ns.database_url, "reward", "reward_service", "0011"
    )
    await migrate(env.ns.database_url, "reward", "reward_service")
    programs = await env.db.fetch("SELECT tenant_id, program_id FROM programs")
    assert [tuple(p) for p in programs] == [("acme", "prg_1")]
    advocates = await env.db.fetch("SELECT tenant_id, advocate_id, program_id FROM advocates")
    assert [tuple(a) for a in advocates] == [("acme", "adv_ann", "prg_1")]
    async with env.serve() as client:
        r = await client.get("/v1/accounts/adv_ann/balance")
        assert r.status_code == 200 and r.json()["balances"], r.text
        assert (await client.get("/v1/programs/prg_1/coupon-pools")).status_code == 200

"""1,000 conversions on real Kafka + Postgres, 10% of the input delivered twice (the same HTTP
request with its Idempotency-Key, and the same click event on Kafka) and 5% arriving before their
clicks: exactly the expected conversion.attributed / conversion.rejected events come out, one
per conversion, nothing twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest

from devstack.testing import FRONT_AND_FASTAPI, eventually, read_topic, wait_caught_up
from referral_events import CloudEvent
from referral_events.contracts import link as ev

from .conftest import Env, click

# Every test twice: the hot path answered by the front door, and by FastAPI alone.
pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

N = 1000
ADVOCATES = 100


def click_id(k: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    tail = "".join(alphabet[(k >> (5 * i)) & 31] for i in range(4))
    return "clk_" + "x" * 20 + tail


async def _scalar(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _gather(coros: list[Any], limit: int = 32) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def test_thousand_conversions_redelivered_and_out_of_order(env: Env) -> None:
    ns = env.ns
    # velocity is not what this test is about: 10 conversions per advocate stay under the limits
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"velocity": {"per_advocate_hour": 1000, "per_advocate_day": 1000}}},
    )
    assert r.status_code == 200
    facts: list[Any] = [
        env.publish(
            "link.events",
            ev.ProgramCreated(
                program_id="prg_1",
                name="p",
                status="active",
                landing_url="https://s.example",
                allowed_domains=["s.example"],
            ),
        )
    ]
    for a in range(ADVOCATES):
        facts.append(
            env.publish(
                "link.events",
                ev.AdvocateEnrolled(
                    advocate_id=f"adv_{a}", program_id="prg_1", customer_id=f"cus_adv_{a}"
                ),
            )
        )
    await _gather(facts)

    late = {k for k in range(N) if k % 20 == 7}  # 5%: the conversion comes before its click
    twice = {k for k in range(N) if k % 10 == 5}  # 10%: HTTP request and click event again
    selfref = {k for k in range(N) if k % 10 == 0}  # 10%: the advocate refers themselves

    def click_event(k: int) -> tuple[ev.LinkClicked, str]:
        return click(click_id(k), advocate=f"adv_{k % ADVOCATES}"), f"click-{k}"

    early = [click_event(k) for k in range(N) if k not in late]
    await _gather([env.publish("link.clicks", c, event_id=i) for c, i in early])
    group = ns.topic_prefix + "attribution-service"
    # every early click is in the service's copy (a partition that has not committed yet is
    # invisible to wait_caught_up, so ask the database)
    await eventually(lambda: _scalar(ns.database_url, "SELECT count(*) = 950 FROM clicks"), 90)

    def body(k: int) -> dict[str, Any]:
        customer = f"cus_adv_{k % ADVOCATES}" if k in selfref else f"cus_friend_{k}"
        return {"type": "signup", "customer_id": customer, "click_id": click_id(k)}

    async def post(k: int) -> tuple[int, int, str]:
        r = await env.client.post(
            "/v1/conversions", json=body(k), headers={"Idempotency-Key": f"conv-{k}"}
        )
        return k, r.status_code, r.json()["id"]

    first = await _gather([post(k) for k in range(N)])
    assert {s for k, s, _ in first if k in late} == {202}
    assert {s for k, s, _ in first if k not in late} == {201}
    ids = {k: cid for k, _, cid in first}

    # the late clicks arrive; the redelivered inputs arrive a second time
    await _gather(
        [
            env.publish("link.clicks", click_event(k)[0], event_id=click_event(k)[1])
            for k in sorted(late)
        ]
    )
    again = await _gather([post(k) for k in sorted(twice)])
    assert all(s in (200,) and ids[k] == cid for k, s, cid in again)
    await _gather(
        [
            env.publish("link.clicks", click_event(k)[0], event_id=click_event(k)[1])
            for k in sorted(twice | late)
        ]
    )
    await wait_caught_up(ns.kafka_bootstrap_servers, [group], timeout=90)

    expected = {
        ids[k]: "conversion.rejected.v1" if k in selfref else "conversion.attributed.v1"
        for k in range(N)
    }
    topic = ns.topic_prefix + "attribution.events"

    def decisions(records: list[Any]) -> list[CloudEvent]:
        events = [CloudEvent.from_json(r.value) for r in records]
        return [
            e for e in events if e.type in ("conversion.attributed.v1", "conversion.rejected.v1")
        ]

    await read_topic(
        ns.kafka_bootstrap_servers, topic, lambda rs: len(decisions(rs)) >= N, timeout=90
    )

    async def outbox_drained() -> bool:
        import asyncpg

        conn = await asyncpg.connect(
            ns.database_url, server_settings={"search_path": "attribution"}
        )
        try:
            return bool(
                await conn.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")
            )
        finally:
            await conn.close()

    await eventually(outbox_drained, timeout=30)
    records = await read_topic(ns.kafka_bootstrap_servers, topic, None)
    events = [CloudEvent.from_json(r.value) for r in records]
    got = decisions(records)
    per_conversion = Counter(e.data["conversion_id"] for e in got)
    assert len(got) == N and set(per_conversion.values()) == {1}, "a conversion decided twice"
    assert {e.data["conversion_id"]: e.type for e in got} == expected
    referrals = Counter(
        e.data["conversion_id"] for e in events if e.type == "referral.attributed.v1"
    )
    assert len(referrals) == N - len(selfref) and set(referrals.values()) == {1}
    assert len({e.id for e in events}) == len(events)
    for e, r in zip(events, records, strict=True):
        assert r.key.decode() == e.data["advocate_id"]

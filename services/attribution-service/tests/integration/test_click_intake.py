"""Clicks are taken in set-wise (issue #24): a consumed run of link.clicked events is one
transaction (inbox rows, locks, copies and the lookup of conversions waiting for them, one
statement each). Redelivered and reordered, the run changes nothing twice: every click copied
once, every conversion that waited for one decided once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import asyncpg
import pytest

from devstack.testing import eventually, read_topic, wait_caught_up
from referral_events import CloudEvent

from .conftest import Env, click, link_facts

pytestmark = pytest.mark.integration

CLICKS = 400
WAITING = 40  # conversions posted before their click arrives


async def _scalar(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_redelivered_reordered_run_of_clicks_counts_once(env: Env) -> None:
    ns = env.ns
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"velocity": {"per_advocate_hour": 1000, "per_advocate_day": 1000}}},
    )
    assert r.status_code == 200
    await link_facts(env.publish)
    await eventually(lambda: _scalar(ns.database_url, "SELECT count(*) = 1 FROM codes"), 30)

    ids = [f"clk_{'y' * 20}{k:04d}" for k in range(CLICKS)]
    posted = []
    for k in range(WAITING):
        r = await env.client.post(
            "/v1/conversions",
            json={"type": "signup", "customer_id": f"cus_friend_{k}", "click_id": ids[k]},
        )
        assert r.status_code == 202, r.text  # its click is not seen yet: it waits
        posted.append(r.json()["id"])

    sends = [(ids[k], f"click-{k}") for k in range(CLICKS)]
    sends += [sends[k] for k in range(0, CLICKS, 7)]  # about 60 delivered twice
    random.Random(24).shuffle(sends)  # and in another order than they happened
    sem = asyncio.Semaphore(64)

    async def send(click_id: str, event_id: str) -> None:
        async with sem:
            await env.publish("link.clicks", click(click_id), event_id=event_id)

    await asyncio.gather(*(send(c, e) for c, e in sends))
    await wait_caught_up(ns.kafka_bootstrap_servers, [ns.topic_prefix + "attribution-service"])
    await eventually(lambda: _scalar(ns.database_url, "SELECT count(*) = 400 FROM clicks"))
    inbox = await _scalar(
        ns.database_url, "SELECT count(*) FROM inbox WHERE event_type = 'link.clicked.v1'"
    )
    assert inbox == CLICKS

    def decided(records: list[Any]) -> list[CloudEvent]:
        events = [CloudEvent.from_json(r.value) for r in records]
        return [e for e in events if e.type == "conversion.attributed.v1"]

    records = await read_topic(
        ns.kafka_bootstrap_servers,
        ns.topic_prefix + "attribution.events",
        lambda rs: len(decided(rs)) >= WAITING,
        timeout=60,
    )
    per_conversion = Counter(e.data["conversion_id"] for e in decided(records))
    assert set(per_conversion) == set(posted) and set(per_conversion.values()) == {1}
    pending = await _scalar(
        ns.database_url, "SELECT count(*) FROM conversions WHERE status = 'pending'"
    )
    assert pending == 0

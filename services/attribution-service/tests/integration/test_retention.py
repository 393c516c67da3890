"""Click retention (issue 19): a program's clicks older than its click retention (90 days by
default; never less than its attribution window) are deleted in bounded batches, the analytics
figures they were folded into keep their counts, young clicks and those of a program keeping
clicks longer stay, and /metrics counts the rows pruned."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from attribution_service.retention import handlers as retention
from devstack.testing import eventually
from servicekit.retention import Pruner

from .conftest import Env, click, link_facts

pytestmark = pytest.mark.integration


def _pruned(metrics: str) -> float:
    m = re.search(r'^referral_retention_pruned_rows_total\{table="clicks"\} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


async def _funnel(env: Env, program: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    r = await env.client.get(
        f"/v1/programs/{program}/analytics",
        params={"from": str(today - timedelta(days=200)), "to": str(today), "interval": "month"},
    )
    assert r.status_code == 200, r.text
    totals: dict[str, Any] = r.json()["totals"]
    return totals


async def test_old_clicks_go_their_counts_stay(env: Env) -> None:
    r = await env.client.put(
        "/v1/programs/prg_2/attribution-settings", json={"click_retention_days": 120}
    )
    assert r.status_code == 200, r.text
    short = await env.client.put(
        "/v1/programs/prg_2/attribution-settings",
        json={"window_days": 60, "click_retention_days": 45},
    )
    assert short.status_code == 422 and "click_retention_days" in short.json()["field"]

    await link_facts(env.publish)
    await link_facts(env.publish, program="prg_2", advocate="adv_2", code="BOB456")
    old = [f"clk_old_{k}" for k in range(5)]
    for k, click_id in enumerate(old):
        await env.publish("link.clicks", click(click_id, ago=timedelta(days=100 + k)))
    await env.publish("link.clicks", click("clk_young", ago=timedelta(days=50)))
    await env.publish(
        "link.clicks",
        click("clk_kept", program="prg_2", advocate="adv_2", ago=timedelta(days=100)),
    )
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:

        async def arrived() -> bool:
            return bool(await conn.fetchval("SELECT count(*) = 7 FROM clicks"))

        await eventually(arrived)
        figures = {p: await _funnel(env, p) for p in ("prg_1", "prg_2")}
        assert figures["prg_1"]["clicks"] == 6 and figures["prg_2"]["clicks"] == 1
        metrics_before = _pruned((await env.client.get("/metrics")).text)

        rt = env.app.state.runtime
        async with rt.transaction() as tx:  # one batch takes at most its limit
            assert await retention.prune_clicks(tx, datetime.now(UTC), 2) == 2
        pruner = Pruner(rt, retention.STEPS, batch=2, interval=60)
        assert await pruner.run_once() == {"clicks": 3}  # in batches of 2: 2, 1
        assert await pruner.run_once() == {"clicks": 0}
        left = {r["id"] for r in await conn.fetch("SELECT id FROM clicks")}
        assert left == {"clk_young", "clk_kept"}
    finally:
        await conn.close()
    assert {p: await _funnel(env, p) for p in ("prg_1", "prg_2")} == figures
    assert _pruned((await env.client.get("/metrics")).text) - metrics_before == 3


def test_retention_never_shorter_than_the_window() -> None:
    from attribution_service.programs.domain import ProgramSettings

    assert ProgramSettings().click_retention() == timedelta(days=90)
    assert ProgramSettings(window_days=120).click_retention() == timedelta(days=120)
    assert ProgramSettings(click_retention_days=30, window_days=7).click_retention() == timedelta(
        days=30
    )

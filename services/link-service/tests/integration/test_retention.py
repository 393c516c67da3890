"""Click retention (issue 19): clicks older than CLICK_RETENTION_DAYS are rolled into click_days
and deleted in bounded batches; the portal's click count and the share reminders' "has shared"
read the same figures before and after; young clicks stay; /metrics counts the rows pruned."""

from __future__ import annotations

import re

import asyncpg
import pytest

from link_service.retention import handlers as retention
from link_service.retention import repository
from servicekit.retention import Pruner

from .test_portal import _advocate, _bearer, _token

pytestmark = pytest.mark.integration
BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"}
BOT = {"user-agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}


def _pruned(metrics: str) -> float:
    m = re.search(r'^referral_retention_pruned_rows_total\{table="clicks"\} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


async def test_old_clicks_roll_up_and_go_young_ones_stay(env) -> None:
    client = env.client
    ann = await _advocate(client)
    for headers in (BROWSER, BROWSER, BROWSER, BROWSER, BOT):
        r = await client.get(f"/r/{ann['code']}", headers=headers)
        assert r.status_code == 302
    token = await _token(client, ann["id"])
    before = (await client.get("/v1/me", headers=_bearer(token))).json()["stats"]["clicks"]
    assert before == 4
    metrics_before = _pruned((await client.get("/metrics")).text)

    conn = await asyncpg.connect(env.ns.database_url)
    try:
        await conn.execute("SET search_path TO link")
        # Three human clicks and the bot's are 100 days old; one human click is 89 days old.
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM clicks ORDER BY is_bot, id")]
        await conn.execute(
            "UPDATE clicks SET clicked_at = now() - interval '100 days' WHERE id = ANY($1)",
            ids[:3] + ids[4:],
        )
        await conn.execute(
            "UPDATE clicks SET clicked_at = now() - interval '89 days' WHERE id = $1", ids[3]
        )
        rt = env.app.state.runtime
        # One batch takes at most its limit.
        async with rt.transaction() as tx:
            first = await retention.steps(90)[0].prune(tx, await tx.fetchval("SELECT now()"), 3)
        assert first == 3
        pruner = Pruner(rt, retention.steps(90), batch=3, interval=60)
        assert await pruner.run_once() == {"clicks": 1}
        assert await pruner.run_once() == {"clicks": 0}
        assert [r["id"] for r in await conn.fetch("SELECT id FROM clicks")] == [ids[3]]
        days = await conn.fetch("SELECT human, counted, bots FROM click_days")
        assert [tuple(d) for d in days] == [(3, 3, 1)]
        assert await repository.roll_up_clicks(conn, await conn.fetchval("SELECT now()"), 10) == 1
    finally:
        await conn.close()
    after = (await client.get("/v1/me", headers=_bearer(token))).json()["stats"]["clicks"]
    assert after == before
    # The worker's batches are counted (the two direct calls above are not).
    assert _pruned((await client.get("/metrics")).text) - metrics_before == 1

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from devstack.testing import FRONT_AND_FASTAPI, eventually, serve_in_process
from link_service.main import create_app

# Every test twice: the hot path answered by the front door, and by FastAPI alone.
pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
SLACKBOT = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"


async def _setup(client: Any, **program: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {
        "name": "Give 20",
        "landing_url": "https://shop.example.com/join?src=ref",
        "allowed_domains": ["example.com"],
        **program,
    }
    r = await client.post("/v1/programs", json=body)
    assert r.status_code == 201, r.text
    p = r.json()
    r = await client.post(f"/v1/programs/{p['id']}/advocates", json={"customer_id": "cus_1"})
    return p, r.json()


def _location(r: Any) -> tuple[str, dict[str, list[str]]]:
    assert r.status_code == 302, r.text
    parts = urlsplit(r.headers["location"])
    return f"{parts.scheme}://{parts.hostname}{parts.path}", parse_qs(parts.query)


async def test_redirects_record_exactly_one_click_per_get(env) -> None:
    client = env.client
    program, advocate = await _setup(client, fallback_url="https://example.com/over")
    code = advocate["code"]
    headers = {"user-agent": CHROME, "referer": "https://mail.google.com/mail/u/0/"}

    where, q = _location(await client.get(f"/r/{code}", headers=headers))
    assert where == "https://shop.example.com/join" and q["src"] == ["ref"]
    assert q["ref"] == [code] and q["click_id"][0].startswith("clk_")
    plain_click = q["click_id"][0]

    # channel + deep links: a path on the landing host, a URL on an allowed domain, never else
    where, q = _location(await client.get(f"/r/{code}/whatsapp?to=/products/42", headers=headers))
    assert where == "https://shop.example.com/products/42"
    assert q["utm_source"] == ["whatsapp"] and q["ref"] == [code]
    whatsapp_click = q["click_id"][0]
    where, _ = _location(await client.get(f"/r/{code}?to=https://blog.example.com/p"))
    assert where == "https://blog.example.com/p"
    for evil in ("https://evil.com/", "//evil.com/", "https://example.com.evil.com/x"):
        where, _ = _location(await client.get(f"/r/{code}", params={"to": evil}))
        assert where == "https://shop.example.com/join", evil

    # a crawler is redirected too, but flagged and never counted
    _, q = _location(await client.get(f"/r/{code}", headers={"user-agent": SLACKBOT}))
    bot_click = q["click_id"][0]

    # HEAD answers like GET but records nothing
    head = await client.head(f"/r/{code}")
    assert head.status_code == 302 and "click_id" not in head.headers["location"]

    # unknown or malformed codes: a 404 page
    for path in ("/r/NOSUCHCODE", "/r/%3Cscript%3E", "/r/A/B/C", "/r/"):
        r = await client.get(path, follow_redirects=False)
        assert r.status_code == 404 and "does not exist" in r.text, path
    assert (await client.head("/r/NOSUCHCODE")).status_code == 404

    # a paused program still redirects (to its fallback), its clicks do not count
    await client.patch(f"/v1/programs/{program['id']}", json={"status": "paused"})
    where, q = _location(await client.get(f"/r/{code}?to=/products/42", headers=headers))
    assert where == "https://example.com/over"
    paused_click = q["click_id"][0]

    gets = 8  # every GET above that answered 302
    events = await env.events("link.clicks", lambda es: len(es) >= gets)
    assert len(await env.all_events("link.clicks")) == gets  # one per GET; the HEAD made none
    by_id = {e.id: e.data for e in events}
    assert len(by_id) == gets
    first = by_id[plain_click]
    assert first["user_agent_family"] == "Chrome" and first["device_class"] == "desktop"
    assert first["referrer_host"] == "mail.google.com" and first["counts"] is True
    assert first["ip_hash"] and "127.0.0.1" not in first["ip_hash"]
    assert first["channel"] is None and by_id[whatsapp_click]["channel"] == "whatsapp"
    bot = by_id[bot_click]
    assert bot["is_bot"] is True and bot["counts"] is False and bot["device_class"] == "bot"
    assert bot["inactive_reason"] == "bot"
    paused = by_id[paused_click]
    assert paused["counts"] is False and paused["inactive_reason"] == "program_inactive"

    conn = await asyncpg.connect(env.ns.database_url)
    try:
        rows = await conn.fetch("SELECT id, counts, is_bot, ip_hash FROM link.clicks")
        assert {r["id"] for r in rows} == set(by_id)
    finally:
        await conn.close()


async def test_every_replica_cache_follows_the_owning_events(env) -> None:
    """Two replicas on one database: a change made through one reaches the other's cache
    through link.events (each replica tails the topic without a consumer group)."""
    client = env.client
    program, advocate = await _setup(client)
    code = advocate["code"]
    other_app = create_app(env.settings())
    async with serve_in_process(other_app, env.key) as other:
        state = other_app.state.links
        await eventually(lambda: state.invalidator.positioned.is_set(), timeout=60)
        # the other replica caches the code
        _, q = _location(await other.get(f"/r/{code}"))
        assert state.cache.get(code.upper())[0]

        # blocked through the first replica: the second one stops counting its clicks
        r = await client.post(f"/v1/advocates/{advocate['id']}/block")
        assert r.status_code == 200
        await eventually(lambda: not state.cache.get(code.upper())[0], timeout=30)
        _, q = _location(await other.get(f"/r/{code}", headers={"user-agent": CHROME}))
        blocked_click = q["click_id"][0]

        # a new landing URL through the first replica: the second one redirects there
        r = await client.patch(
            f"/v1/programs/{program['id']}", json={"landing_url": "https://example.com/new"}
        )
        assert r.status_code == 200
        await eventually(lambda: not state.cache.get(code.upper())[0], timeout=30)
        where, _ = _location(await other.get(f"/r/{code}"))
        assert where == "https://example.com/new"

    events = await env.events("link.clicks", lambda es: any(e.id == blocked_click for e in es))
    blocked = next(e for e in events if e.id == blocked_click)
    assert blocked.data["counts"] is False
    assert blocked.data["inactive_reason"] == "advocate_blocked"


async def test_a_click_that_cannot_commit_still_redirects_without_a_click_id(env) -> None:
    """The database refuses clicks (here: their table is gone for a moment): the visitor is
    still sent on, with `ref` but no click id, since no click id may exist without its click."""
    client = env.client
    _, advocate = await _setup(client)
    code = advocate["code"]
    _location(await client.get(f"/r/{code}"))  # cached now: the lookup needs no database
    conn = await asyncpg.connect(env.ns.database_url)
    try:
        await conn.execute("ALTER TABLE link.clicks RENAME TO clicks_away")
        where, q = _location(await client.get(f"/r/{code}", headers={"user-agent": CHROME}))
        assert where == "https://shop.example.com/join"
        assert q["ref"] == [code] and "click_id" not in q
        await conn.execute("ALTER TABLE link.clicks_away RENAME TO clicks")
        _, q = _location(await client.get(f"/r/{code}", headers={"user-agent": CHROME}))
        click_id = q["click_id"][0]
        assert await conn.fetchval("SELECT count(*) FROM link.clicks WHERE id = $1", click_id) == 1
        assert await conn.fetchval("SELECT count(*) FROM link.clicks") == 2
    finally:
        await conn.close()


async def test_clicks_wake_the_relay_whichever_replica_leads_it(env) -> None:
    """A click's commit wakes the outbox relay: in-process (no NOTIFY) on the replica whose
    relay leads, by NOTIFY from any other replica. The relays here poll only every 60 s, so a
    click published within seconds was woken for, on either path."""
    _, advocate = await _setup(env.client)
    code = advocate["code"]
    # The fixture's own replica polls every 0.2 s: stopped first, so it cannot publish for us.
    rt = env.app.state.links.rt
    await rt.relay.stop()
    await eventually(lambda: not rt.relay.is_leader, timeout=30)

    slow = {"outbox_poll_interval_seconds": 60.0}
    leader_app, other_app = create_app(env.settings(**slow)), create_app(env.settings(**slow))
    async with serve_in_process(leader_app, env.key) as leader:
        leading = leader_app.state.links.rt.relay
        await eventually(lambda: leading.is_leader, timeout=60)
        async with serve_in_process(other_app, env.key) as other:
            assert not other_app.state.links.rt.relay.is_leader
            for replica in (leader, other):
                _, q = _location(await replica.get(f"/r/{code}", headers={"user-agent": CHROME}))
                clicked = q["click_id"][0]
                await env.events(
                    "link.clicks", lambda es, c=clicked: any(e.id == c for e in es), 15
                )


async def test_a_malformed_deep_link_goes_to_the_landing_page_not_a_500(env) -> None:
    # The review: /r/{code}?to=http://[ answered 500 after recording the click.
    _, advocate = await _setup(env.client)
    code = advocate["code"]
    malformed = ["http://[", "https://[::1", "http://[zz]/x", "https://exa mple.com:99999999/"]
    for to in malformed:
        where, q = _location(await env.client.get(f"/r/{code}", params={"to": to}))
        assert where == "https://shop.example.com/join" and q["ref"] == [code], to
    # one click per redirect answered, none for an answer not given
    events = await env.events("link.clicks", lambda es: len(es) >= len(malformed))
    assert len(events) == len(malformed)


async def test_a_landing_url_without_a_path_gets_one_before_the_query(env) -> None:
    """Issue 17: `https://shop.example.com?ref=...`; the hot path and the general builder alike
    (the plain click, and one with utm_* that takes the builder)."""
    _program, advocate = await _setup(env.client, landing_url="https://shop.example.com")
    code = advocate["code"]
    for path in (f"/r/{code}", f"/r/{code}/whatsapp"):
        r = await env.client.get(path, headers={"user-agent": CHROME})
        assert r.status_code == 302, r.text
        assert r.headers["location"].startswith("https://shop.example.com/?"), r.headers
        assert f"ref={code}" in r.headers["location"]

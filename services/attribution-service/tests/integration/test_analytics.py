"""Growth analytics on real Kafka + Postgres: a scripted scenario with known numbers (four
advocates, human, repeat and bot clicks on three channels, signups, first and repeat purchases
in two currencies, a refund, a voided reward and a claw-back) gives exact figures; the same
events delivered twice and shuffled give the same figures; bad input is 404/422. Link and reward
events go through Kafka; this service's own (attribution.events) are kept as its emitting
transaction keeps them, and its worker folds them."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from attribution_service.analytics import repository as analytics_repository
from devstack.testing import eventually
from referral_events import EventPayload, new_event
from referral_events.contracts import attribution as at
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw
from referral_events.outbox import OutboxRow, enqueue_rows

from .conftest import Env

pytestmark = pytest.mark.integration

Event = tuple[str, EventPayload, datetime, str]


def t(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def scenario(p: str) -> list[Event]:
    """Program `p`'s events, every id prefixed with it; (topic, payload, time, event id)."""
    out: list[Event] = []

    def add(topic: str, payload: EventPayload, when: datetime) -> None:
        out.append((topic, payload, when, f"{p}-ev-{len(out)}"))

    add("link.events", ev.ProgramCreated(
        program_id=p, name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]), t(1))  # fmt: skip
    for adv, name, when in [
        ("a1", "Ann Smith", t(2)),
        ("a2", "Bob", t(2, 12)),
        ("a3", None, t(3)),
        ("a4", "ann@example.com", t(10)),
    ]:
        add("link.events", ev.AdvocateEnrolled(
            advocate_id=f"{p}-{adv}", program_id=p, customer_id=f"{p}-cus-{adv}", name=name,
            email=f"{adv}@example.com"), when)  # fmt: skip

    def click(n: int, adv: str, day: int, channel: str, ip: str | None, bot: bool = False) -> None:
        add("link.clicks", ev.LinkClicked(
            click_id=f"{p}-c{n}", code="X", advocate_id=f"{p}-{adv}", program_id=p,
            clicked_at=t(day), channel=channel, ip_hash=ip, is_bot=bot, counts=not bot),
            t(day))  # fmt: skip

    click(1, "a1", 3, "email", "h1")
    click(2, "a1", 3, "email", "h1")  # a repeat visitor
    click(3, "a1", 4, "sms", "h2")
    click(4, "a1", 4, "email", "hb", bot=True)
    click(5, "a2", 5, "whatsapp", "h3")
    click(6, "a2", 5, "whatsapp", None)  # no IP hash: its own visitor
    click(7, "a3", 5, "email", "hb", bot=True)  # a3 only ever had a bot: not a sharer

    for f, adv, day in [("f1", "a1", 3), ("f2", "a1", 4), ("f3", "a2", 5)]:
        add("attribution.events", at.ReferralAttributed(
            referral_id=f"{p}-r-{f}", program_id=p, advocate_id=f"{p}-{adv}",
            friend_customer_id=f"{p}-{f}", conversion_id=f"{p}-signup-{f}", evidence="click",
            attributed_at=t(day, 12)), t(day, 12))  # fmt: skip
        add("attribution.events", at.ConversionAttributed(
            conversion_id=f"{p}-signup-{f}", referral_id=f"{p}-r-{f}", program_id=p,
            advocate_id=f"{p}-{adv}", friend_customer_id=f"{p}-{f}", conversion_type="signup",
            occurred_at=t(day, 12), evidence="click"), t(day, 12))  # fmt: skip

    def purchase(
        cid: str, f: str, adv: str, when: datetime, amount: int, cur: str, first: bool
    ) -> None:
        add("attribution.events", at.ConversionAttributed(
            conversion_id=f"{p}-{cid}", referral_id=f"{p}-r-{f}", program_id=p,
            advocate_id=f"{p}-{adv}", friend_customer_id=f"{p}-{f}", conversion_type="purchase",
            order_id=f"{p}-o-{cid}", amount_minor=amount, currency=cur, is_first_purchase=first,
            occurred_at=when, evidence="click"), when)  # fmt: skip

    purchase("buy1", "f1", "a1", t(6), 10000, "USD", True)
    purchase("buy2", "f3", "a2", t(7), 5000, "EUR", True)
    purchase("buy3", "f1", "a1", t(8), 4000, "USD", False)
    add("attribution.events", at.ConversionRefunded(
        conversion_id=f"{p}-buy3", refund_id=f"{p}-rf1", program_id=p, advocate_id=f"{p}-a1",
        friend_customer_id=f"{p}-f1", conversion_type="purchase", amount_minor=4000,
        currency="USD", refunded_total_minor=4000, full=True, refunded_at=t(9)), t(9))  # fmt: skip

    def reward(kind: type[Any], rid: str, adv: str, holder: str, role: str, conv: str,
               amount: int, unit: str, when: datetime, **kw: Any) -> None:  # fmt: skip
        add("reward.events", kind(
            reward_id=f"{p}-{rid}", program_id=p, advocate_id=f"{p}-{adv}", holder_id=holder,
            role=role, conversion_id=f"{p}-{conv}", kind="credit", amount=amount, unit=unit,
            **kw), when)  # fmt: skip

    # R1: the advocate's 20.00 for f1's first purchase, held then released.
    reward(rw.RewardPending, "R1", "a1", f"{p}-a1", "advocate", "buy1", 2000, "USD", t(6),
           available_at=t(6, 11))  # fmt: skip
    reward(rw.RewardAvailable, "R1", "a1", f"{p}-a1", "advocate", "buy1", 2000, "USD", t(6, 11))
    # R2: the friend's 10.00, available at once.
    reward(rw.RewardAvailable, "R2", "a1", f"{p}-f1", "friend", "buy1", 1000, "USD", t(6))
    # R3: the advocate's 15.00 EUR for f3.
    reward(rw.RewardPending, "R3", "a2", f"{p}-a2", "advocate", "buy2", 1500, "EUR", t(7),
           available_at=t(7, 11))  # fmt: skip
    reward(rw.RewardAvailable, "R3", "a2", f"{p}-a2", "advocate", "buy2", 1500, "EUR", t(7, 11))
    # R4: 5.00 for the repeat purchase, voided in its hold by the refund.
    reward(rw.RewardPending, "R4", "a1", f"{p}-a1", "advocate", "buy3", 500, "USD", t(8),
           available_at=t(20))  # fmt: skip
    reward(rw.RewardVoided, "R4", "a1", f"{p}-a1", "advocate", "buy3", 500, "USD", t(9),
           reason="refunded", voided_at=t(9))  # fmt: skip
    # R5: 100 points to a2, 40 of them clawed back.
    reward(rw.RewardAvailable, "R5", "a2", f"{p}-a2", "advocate", "buy2", 100, "points", t(7))
    reward(rw.RewardClawedBack, "R5", "a2", f"{p}-a2", "advocate", "buy2", 40, "points", t(9),
           method="negative_entry", reason="refunded", clawed_back_at=t(9))  # fmt: skip
    return out


async def emit_own(
    env: Env,
    payload: EventPayload,
    *,
    event_id: str | None = None,
    time: datetime | None = None,
    tenant: str = "acme",
) -> None:
    """One of this service's own events (attribution.events) as its emitting transaction writes
    it: into the outbox, which the service's worker folds from (analytics.handlers.
    fold_outboxed) and its relay publishes."""
    event = new_event(payload, source="/test", tenant_id=tenant, event_id=event_id, time=time)
    row = OutboxRow(event.id, "attribution.events", "k", event.to_json())
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        async with conn.transaction():
            await enqueue_rows(conn, [row])
    finally:
        await conn.close()


async def _publish_all(env: Env, events: list[Event]) -> int:
    """Link and reward events onto Kafka; this service's own folded as emitted, each once (its
    emitting transaction runs once). Returns how many went onto Kafka (distinct ids)."""
    emitted: set[str] = set()
    on_kafka: set[str] = set()
    for topic, payload, when, event_id in events:
        if topic == "attribution.events":
            if event_id not in emitted:
                emitted.add(event_id)
                await emit_own(env, payload, event_id=event_id, time=when)
        else:
            on_kafka.add(event_id)
            await env.publish(topic, payload, event_id=event_id, time=when)
    return len(on_kafka)


async def _folded(env: Env, n: int) -> None:
    """Until the consumers have folded `n` distinct events from Kafka (link events in the
    attribution-service group, reward events in attribution-service-analytics) and the worker every
    event of this service's own."""

    async def check() -> bool:
        conn = await asyncpg.connect(
            env.ns.database_url, server_settings={"search_path": "attribution"}
        )
        try:
            got = await conn.fetchval(
                "SELECT count(*) FROM inbox"
                " WHERE consumer IN ('attribution-service', 'attribution-service-analytics')"
            )
            waiting = await analytics_repository.unfolded(conn)
        finally:
            await conn.close()
        return bool(got >= n and waiting == 0)

    await eventually(check, 90)


RANGE = {"from": "2026-11-01", "to": "2026-11-30"}


async def _get(env: Env, path: str, **params: Any) -> Any:
    r = await env.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_scripted_scenario_gives_exact_figures(env: Env) -> None:
    events = scenario("prg_a")
    await _folded(env, await _publish_all(env, events))

    body = await _get(env, "/v1/programs/prg_a/analytics", **RANGE, interval="month")
    assert body["from"] == "2026-11-01" and body["time_zone"] == "UTC"
    totals = body["totals"]
    assert body["buckets"][0]["figures"] == totals
    assert {k: totals[k] for k in (
        "advocates_enrolled", "advocates_shared", "clicks", "bot_clicks", "unique_visitors",
        "signups", "first_purchases")} == {
        "advocates_enrolled": 4, "advocates_shared": 2, "clicks": 5, "bot_clicks": 2,
        "unique_visitors": 4, "signups": 3, "first_purchases": 2}  # fmt: skip
    assert totals["rates"] == {
        "shared": 0.5,
        "visitor_to_signup": 0.75,
        "signup_to_first_purchase": 2 / 3,
        "visitor_to_first_purchase": 0.5,
    }
    assert totals["revenue"] == [
        {"currency": "EUR", "purchases": 1, "gross_minor": 5000, "refunded_minor": 0,
         "net_minor": 5000},
        {"currency": "USD", "purchases": 2, "gross_minor": 14000, "refunded_minor": 4000,
         "net_minor": 10000},
    ]  # fmt: skip
    assert totals["reward_cost"] == [
        {"unit": "EUR", "issued": 1500, "voided": 0, "clawed_back": 0, "net": 1500,
         "cost_per_acquired_customer": 750, "roi": (5000 - 1500) / 1500},
        {"unit": "USD", "issued": 3500, "voided": 500, "clawed_back": 0, "net": 3000,
         "cost_per_acquired_customer": 1500, "roi": (10000 - 3000) / 3000},
        {"unit": "points", "issued": 100, "voided": 0, "clawed_back": 40, "net": 60,
         "cost_per_acquired_customer": 30, "roi": None},
    ]  # fmt: skip
    assert body["channels"] == [
        {"channel": "email", "clicks": 2, "bot_clicks": 2, "unique_visitors": 1,
         "advocates_shared": 1},
        {"channel": "sms", "clicks": 1, "bot_clicks": 0, "unique_visitors": 1,
         "advocates_shared": 1},
        {"channel": "whatsapp", "clicks": 2, "bot_clicks": 0, "unique_visitors": 2,
         "advocates_shared": 1},
    ]  # fmt: skip

    # By day: the repeat visitor of the 3rd is one visitor; days without facts are zeros.
    days = await _get(env, "/v1/programs/prg_a/analytics", **RANGE, interval="day")
    assert len(days["buckets"]) == 30
    third = days["buckets"][2]
    assert third["start"] == "2026-11-03"
    assert (third["figures"]["clicks"], third["figures"]["unique_visitors"]) == (2, 1)
    assert days["buckets"][29]["figures"]["clicks"] == 0

    # One channel: its click figures; program-wide facts have none.
    wa = await _get(
        env, "/v1/programs/prg_a/analytics", **RANGE, interval="month", channel="whatsapp"
    )
    assert (wa["totals"]["clicks"], wa["totals"]["unique_visitors"]) == (2, 2)
    assert wa["totals"]["signups"] is None and wa["totals"]["reward_cost"] == []

    # CSV: a row per bucket and the range's row, the same figures.
    r = await env.client.get(
        "/v1/programs/prg_a/analytics", params={**RANGE, "interval": "month"},
        headers={"Accept": "text/csv"},
    )  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\n")
    header = lines[0].split(",")
    last = dict(zip(header, lines[-1].split(","), strict=True))
    assert len(lines) == 3
    assert (last["from"], last["clicks"], last["cost_net_USD"], last["revenue_net_minor_EUR"]) == (
        "2026-11-01", "5", "3000", "5000")  # fmt: skip

    viral = await _get(env, "/v1/programs/prg_a/analytics/viral", **RANGE, interval="month")
    assert viral["totals"] | {"start": None, "end": None} == {
        "start": None, "end": None, "advocates_enrolled": 4, "invites": 4,
        "referred_first_purchases": 2, "invites_per_advocate": 1.0,
        "invite_conversion_rate": 0.5, "k_factor": 0.5,
        # f1: 4 days after a1 enrolled; f3: 4 days 22 hours after a2: the median of the two
        "cycle_time_median_seconds": (4 * 86400 + (4 * 86400 + 22 * 3600)) / 2,
    }  # fmt: skip

    cohorts = await _get(env, "/v1/programs/prg_a/analytics/cohorts", **RANGE)
    assert cohorts["cohorts"] == [
        {"week": "2026-11-02", "advocates": 3, "referred_within_7_days": 2,
         "referred_within_30_days": 2, "referred_within_90_days": 2},
        {"week": "2026-11-09", "advocates": 1, "referred_within_7_days": 0,
         "referred_within_30_days": 0, "referred_within_90_days": 0},
    ]  # fmt: skip

    board = await _get(env, "/v1/programs/prg_a/leaderboard", metric="referrals")
    top = [(e["rank"], e["advocate_id"], e["display_name"], e["score"]) for e in board["entries"]]
    assert top == [(1, "prg_a-a1", "Ann S.", 2), (2, "prg_a-a2", "Bob", 1)]
    earned = await _get(env, "/v1/programs/prg_a/leaderboard", metric="earned", unit="points")
    assert [(e["advocate_id"], e["score"]) for e in earned["entries"]] == [("prg_a-a2", 60)]
    me = await _get(env, "/v1/programs/prg_a/leaderboard/prg_a-a2", metric="referrals")
    assert (me["rank"], me["score"]) == (2, 1)

    # one advocate: a1's clicks (a bot's not), friends, purchases and earnings
    a1 = await _get(env, "/v1/programs/prg_a/analytics/advocates/prg_a-a1", **RANGE)
    assert a1 == {
        "advocate_id": "prg_a-a1", "display_name": "Ann S.", "from": "2026-11-01",
        "to": "2026-11-30", "clicks": 3, "referrals": 2, "signups": 2, "first_purchases": 1,
        "revenue_minor": {"USD": 14000}, "earned": {"USD": 2000},
    }  # fmt: skip
    a2 = await _get(env, "/v1/programs/prg_a/analytics/advocates/prg_a-a2", **RANGE)
    assert (a2["earned"], a2["revenue_minor"]) == ({"EUR": 1500, "points": 60}, {"EUR": 5000})
    r = await env.client.get("/v1/programs/prg_a/analytics/advocates/nobody")
    assert r.status_code == 404


async def test_redelivered_and_shuffled_events_give_the_same_figures(env: Env) -> None:
    once, twice = scenario("prg_o"), scenario("prg_t")
    shuffled = twice + twice  # every event twice, with its id
    random.Random(7).shuffle(shuffled)
    n = await _publish_all(env, once)
    n += await _publish_all(env, shuffled)
    await _folded(env, n)

    async def figures(p: str) -> list[Any]:
        out = []
        for path, params in [
            ("analytics", {"interval": "day"}),
            ("analytics/viral", {"interval": "week"}),
            ("analytics/cohorts", {}),
            ("analytics/advocates/" + p + "-a1", {}),
        ]:
            body = await _get(env, f"/v1/programs/{p}/{path}", **RANGE, **params)
            body.pop("program_id", None)
            body.pop("advocate_id", None)
            out.append(body)
        board = await _get(env, f"/v1/programs/{p}/leaderboard", metric="earned", unit="USD")
        out.append([(e["advocate_id"].split("-", 1)[1], e["score"]) for e in board["entries"]])
        return out

    assert await figures("prg_o") == await figures("prg_t")


async def test_bad_input(env: Env) -> None:
    await env.publish("link.events", ev.ProgramCreated(
        program_id="prg_x", name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]), tenant="globex")  # fmt: skip
    await env.publish("link.events", ev.ProgramCreated(
        program_id="prg_b", name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]))  # fmt: skip
    await _folded(env, 2)
    for path in ("analytics", "analytics/viral", "analytics/cohorts", "leaderboard"):
        r = await env.client.get(f"/v1/programs/prg_x/{path}")  # another tenant's
        assert r.status_code == 404 and r.json()["field"] == "/program_id", path
        r = await env.client.get(f"/v1/programs/prg_nope/{path}")
        assert r.status_code == 404, path
    r = await env.client.get(
        "/v1/programs/prg_b/analytics", params={"from": "2026-11-05", "to": "2026-11-01"}
    )
    assert r.status_code == 422 and r.json()["field"] == "/from"
    r = await env.client.get(
        "/v1/programs/prg_b/analytics",
        params={"from": "2020-01-01", "to": "2026-11-01", "interval": "day"},
    )
    assert r.status_code == 422 and r.json()["field"] == "/interval"
    r = await env.client.get("/v1/programs/prg_b/leaderboard", params={"metric": "earned"})
    assert r.status_code == 422 and r.json()["field"] == "/unit"
    r = await env.client.get("/v1/programs/prg_b/leaderboard/nobody")
    assert r.status_code == 404


async def test_rank_from_the_counts_matches_the_order_of_the_index(env: Env) -> None:
    """Each advocate's rank (summed from the counts per score and block, counted inside its
    block) is its place in the top list (score descending, ties by id), also after scores went
    down (claw-backs) and with many ids in one block."""
    from servicekit.ids import new_id

    rnd = random.Random(11)
    await env.publish("link.events", ev.ProgramCreated(
        program_id="prg_r", name="p", status="active", landing_url="https://s.example",
        allowed_domains=["s.example"]))  # fmt: skip
    advocates = [new_id("adv") for _ in range(40)] + [f"adv_aa{k}" for k in range(20)]
    n = 1
    for a in advocates:
        for k in range(rnd.randrange(4)):
            await emit_own(env, at.ReferralAttributed(
                referral_id=f"r-{a}-{k}", program_id="prg_r", advocate_id=a,
                friend_customer_id=f"f-{a}-{k}", conversion_id=f"c-{a}-{k}", evidence="click",
                attributed_at=t(3)))  # fmt: skip
        earned = rnd.choice([1000, 2000])
        await env.publish("reward.events", rw.RewardAvailable(
            reward_id=f"rw-{a}", program_id="prg_r", advocate_id=a, holder_id=a,
            role="advocate", conversion_id="c", kind="credit", amount=earned,
            unit="USD"))  # fmt: skip
        if rnd.random() < 0.5:
            await env.publish("reward.events", rw.RewardClawedBack(
                reward_id=f"rw-{a}", program_id="prg_r", advocate_id=a, holder_id=a,
                role="advocate", conversion_id="c", kind="credit", amount=1000, unit="USD",
                method="debt", reason="refunded"))  # fmt: skip
            n += 1
        n += 1
    await _folded(env, n)
    for params in [{"metric": "referrals"}, {"metric": "earned", "unit": "USD"}]:
        board = await _get(env, "/v1/programs/prg_r/leaderboard", **params, limit=100)
        entries = board["entries"]
        assert [(-e["score"], e["advocate_id"]) for e in entries] == sorted(
            (-e["score"], e["advocate_id"]) for e in entries
        )
        for e in entries:
            me = await _get(env, f"/v1/programs/prg_r/leaderboard/{e['advocate_id']}", **params)
            assert (me["rank"], me["score"]) == (e["rank"], e["score"]), e
    # every advocate earned: all 60 are on the earned board, ties among them in one block
    assert len(entries) == len(advocates)


async def test_customer_value_of_referred_customers_beside_the_others(env: Env) -> None:
    """Purchases through POST /v1/conversions, referred (the code at checkout) and not: the
    customer value and CLV of each group, and the payback, match a hand computation."""
    from datetime import timedelta

    from .conftest import link_facts

    await link_facts(env.publish, program="prg_c", advocate="adv_c", code="ANN123")
    x = (datetime.now(UTC) - timedelta(days=70)).replace(hour=12, minute=0, second=0, microsecond=0)

    async def buy(customer: str, order: str, minor: int, day: int, code: str | None = None) -> str:
        body = {"type": "purchase", "customer_id": customer, "order_id": order,
                "amount_minor": minor, "currency": "USD",
                "occurred_at": (x + timedelta(days=day)).isoformat()}  # fmt: skip
        if code:
            body["code"] = code

        async def decided() -> Any:
            r = await env.client.post(
                "/v1/conversions", json=body, headers={"Idempotency-Key": order}
            )
            assert r.status_code in (200, 201, 202), r.text
            return r.json() if r.json()["status"] != "pending" else None

        got = await eventually(decided, 30)  # the code arrives through Kafka
        return str(got["status"])

    assert await buy("cus_f1", "o1", 10000, 0, "ANN123") == "attributed"
    assert await buy("cus_f1", "o2", 5000, 9) == "attributed"  # f1 stays attached
    assert await buy("cus_f2", "o3", 3000, 2, "ANN123") == "attributed"
    assert await buy("cus_o1", "o4", 2000, 1) == "organic"
    assert await buy("cus_o1", "o5", 2000, 59) == "organic"  # outside the window
    assert await buy("cus_o2", "o6", 4000, 3) == "organic"
    assert await buy("cus_o3", "o7", 1000, 4) == "organic"
    assert await buy("cus_o3", "o7", 1000, 4) == "organic"  # the same request again
    # the program's reward cost in the window: 20.00
    await env.publish("reward.events", rw.RewardAvailable(
        reward_id="rw_c", program_id="prg_c", advocate_id="adv_c", holder_id="adv_c",
        role="advocate", conversion_id="c", kind="credit", amount=2000, unit="USD"),
        time=x)  # fmt: skip

    window = {"from": str(x.date()), "to": str((x + timedelta(days=9)).date())}

    async def folded() -> Any:
        body = await _get(env, "/v1/programs/prg_c/analytics/customer-value", **window)
        usd = body["currencies"][0] if body["currencies"] else {}
        # every purchase, both first purchases (the cost's divisor: folded from the outbox, after
        # the purchases themselves) and the reward folded; each arrives its own way, in any order
        purchases = [usd.get(group, {}).get("purchases") for group in ("referred", "others")]
        funnel = await _get(env, "/v1/programs/prg_c/analytics", **window)
        firsts = funnel["totals"]["first_purchases"]
        done = purchases == [3, 3] and firsts == 2 and usd.get("cost_per_acquired_customer")
        return body if done else None

    body = await eventually(folded, 60)
    assert body["window_days"] == 10
    [usd] = body["currencies"]
    # referred: f1 (100.00 + 50.00, first to last purchase 9 days: lifespan 10 days) and f2
    # (30.00, 1 day): AOV 180.00 / 3, 1.5 purchases each, value 90.00 per window; the mean
    # lifespan (10 + 1) / 2 = 5.5 days is under one window of 10 days, so CLV = value.
    assert usd["referred"] == {
        "customers": 2, "purchases": 3, "revenue_minor": 18000, "lifespan_days": 5.5,
        "aov_minor": 6000.0, "purchases_per_customer": 1.5, "customer_value_minor": 9000.0,
        "clv_minor": 9000.0,
    }  # fmt: skip
    # others in the window: o1 (20.00; its last purchase 58 days later: lifespan 59 days),
    # o2 (40.00), o3 (10.00): value 70.00 / 3 per window, mean lifespan (59 + 1 + 1) / 3 days,
    # i.e. 61 / 30 windows of 10 days.
    others = usd["others"]
    assert (others["customers"], others["purchases"], others["revenue_minor"]) == (3, 3, 7000)
    assert others["lifespan_days"] == pytest.approx(61 / 3)
    assert others["customer_value_minor"] == pytest.approx(7000 / 3)
    assert others["clv_minor"] == pytest.approx(7000 / 3 * 61 / 30)
    # 20.00 of rewards over 2 first purchases: 10.00 per customer, paid back by 90.00 per 10
    # days in 1.11 days
    assert usd["cost_per_acquired_customer"] == 1000
    assert usd["payback_days"] == pytest.approx(1000 / 900)


async def test_an_event_committed_after_a_later_one_is_still_folded(env: Env) -> None:
    """Outbox rows commit in any order; the folds read past a row only once no transaction that
    could still commit an earlier one is running, so a slow transaction's event is not skipped."""

    def signup(n: int) -> at.ConversionAttributed:
        return at.ConversionAttributed(
            conversion_id=f"late-{n}", referral_id=f"late-r-{n}", program_id="prg_late",
            advocate_id="late-a", friend_customer_id=f"late-f{n}", conversion_type="signup",
            occurred_at=t(3), evidence="click")  # fmt: skip

    slow = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        tx = slow.transaction()
        await tx.start()
        event = new_event(signup(1), source="/test", tenant_id="acme", time=t(3))
        await enqueue_rows(slow, [OutboxRow(event.id, "attribution.events", "k", event.to_json())])
        await emit_own(env, signup(2), time=t(3))  # written after, committed first
        await asyncio.sleep(1.5)  # the worker runs meanwhile (every 0.5 s when idle)
        await tx.commit()
    finally:
        await slow.close()
    await _folded(env, 0)
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        signups = await conn.fetchval(
            "SELECT sum(value) FROM analytics_counters"
            " WHERE program_id = 'prg_late' AND metric = 'signups'"
        )
    finally:
        await conn.close()
    assert signups == 2


async def test_the_folds_read_the_outbox_in_transaction_id_order_across_a_digit(env: Env) -> None:
    """Transaction ids are numbers: the rows of transaction 99 come before those of 100 (sorted
    as text, "100" came first and the rows of 99 were skipped once the cursor moved past 100)."""
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            # Old transaction ids (below every running one), rows the relay never sees (this
            # transaction is rolled back), the cursor just before them.
            await conn.execute("UPDATE analytics_fold_cursor SET xid = '98'::xid8, seq = 0")
            for xid, name in [("100", b"second"), ("99", b"first")]:
                await conn.execute(
                    "INSERT INTO outbox (event_id, topic, key, payload, xid)"
                    " VALUES ($1, 'attribution.events', 'k', $2, $3::text::xid8)",
                    f"digit-{xid}",
                    name,
                    xid,
                )
            got = await analytics_repository.take_outboxed(conn, "attribution.events", 2)
            cursor = await conn.fetchval("SELECT xid::text FROM analytics_fold_cursor")
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    assert got == [b"first", b"second"]
    assert cursor == "100"

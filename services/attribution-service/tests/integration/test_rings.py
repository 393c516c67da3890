"""Fraud that takes more than one request to see (issue #20), through the API on real Postgres
and Kafka, with the program's default fraud settings.

Scripted rings (several sizes; IPv4 and IPv6 networks, one device, one browser on one network,
one email stem), each an advocate's "friends" converting at once (concurrently: decided in group
commits, or one by one), go to review from the member that completes the cluster on, with an
explanation naming it (signal, count, conversion ids). A scripted population of ordinary
referrals (five friends in one office, a family on one home network sharing a tablet, one very
active advocate with 30 friends over a month) stays attributed. The detection and false-positive
rates are printed (pytest -s).

Time that cannot be faked: a conversion dated ahead of the server's clock answers 422 naming
/occurred_at, and one claiming a later time than it arrived at is still too fast after a click
the platform saw 2 s before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devstack.testing import eventually
from referral_events.contracts import link as ev
from servicekit.keyedhash import KeyedHash

from .conftest import Env, click, link_facts

pytestmark = pytest.mark.integration


@dataclass
class Group:
    name: str
    advocate: str
    bodies: list[dict[str, Any]]
    ring: bool
    # the signal the ring shares and the size of the cluster that flags it
    signal: str | None = None
    threshold: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)


def _friends(n: int, prefix: str, **per: Any) -> list[dict[str, Any]]:
    """n signups; each keyword is a value or a function of the friend's index."""
    return [
        {
            "type": "signup",
            "customer_id": f"cus_{prefix}_{i}",
            **{k: v(i) if callable(v) else v for k, v in per.items()},
        }
        for i in range(n)
    ]


def _ua(i: int) -> str:
    return f"Mozilla/5.0 (device {i}) AppleWebKit/537.36 Chrome/{120 + i}.0 Safari/537.36"


NOW = datetime.now(UTC)
LETTERS = "abcdefghijklmnopqrstuvwxyzabcd"

GROUPS = [
    # --- rings -------------------------------------------------------------------------------
    Group(
        "ipv4 network, 8",
        "adv_r1",
        _friends(8, "r1", ip=lambda i: f"203.0.113.{10 + i}", user_agent=_ua),
        ring=True,
        signal="network",
        threshold=8,
    ),
    Group(
        "ipv4 network, 12",
        "adv_r2",
        _friends(12, "r2", ip=lambda i: f"198.51.100.{100 + i}", user_agent=_ua),
        ring=True,
        signal="network",
        threshold=8,
    ),
    Group(
        "ipv6 network (/48), 10",
        "adv_r3",
        _friends(10, "r3", ip=lambda i: f"2001:db8:abcd:{i:x}::{i + 1:x}", user_agent=_ua),
        ring=True,
        signal="network",
        threshold=8,
    ),
    Group(
        "one device, 3",
        "adv_r4",
        _friends(3, "r4", device_id="dev-ring-4", ip=lambda i: f"192.0.{i}.7"),
        ring=True,
        signal="device",
        threshold=3,
    ),
    Group(
        "one device, 6",
        "adv_r5",
        _friends(6, "r5", device_id="dev-ring-5", ip=lambda i: f"100.64.{i}.9"),
        ring=True,
        signal="device",
        threshold=3,
    ),
    Group(
        "one browser on one ipv6 network, 6",
        "adv_r6",
        _friends(6, "r6", ip=lambda i: f"2001:db8:6::{i + 1:x}", user_agent=_ua(0)),
        ring=True,
        signal="user_agent_network",
        threshold=6,
    ),
    Group(
        "one email stem, 4",
        "adv_r7",
        _friends(4, "r7", email=lambda i: f"mike{1990 + i}@gmail.com"),
        ring=True,
        signal="email_stem",
        threshold=3,
    ),
    Group(
        "one rare domain, 7",
        "adv_r8",
        _friends(7, "r8", email=lambda i: f"{'abcdefg'[i]}.buyer@deals-club.example"),
        ring=True,
        signal="email_domain",
        threshold=6,
    ),
    # --- ordinary referrals ------------------------------------------------------------------
    Group(
        "five friends in one office",
        "adv_o1",
        # one NAT address, one company domain, the same managed browser on three laptops
        _friends(
            5,
            "o1",
            ip="192.0.2.44",
            user_agent=lambda i: _ua(0) if i < 3 else _ua(i),
            email=lambda i: f"{'abcde'[i]}.worker@initech.example",
        ),
        ring=False,
    ),
    Group(
        "a family on one home network",
        "adv_o2",
        # four people at home, two of them on the family tablet
        _friends(
            4,
            "o2",
            ip="198.18.0.20",
            device_id=lambda i: "tablet-smith" if i < 2 else f"phone-smith-{i}",
            user_agent=_ua,
            email=lambda i: f"{['anna', 'bob', 'carl', 'dora'][i]}.smith@gmail.com",
        ),
        ring=False,
    ),
    Group(
        "a very active advocate, 30 friends over a month",
        "adv_o3",
        _friends(
            30,
            "o3",
            ip=lambda i: f"{11 + i}.{20 + i}.{30 + i}.40",
            user_agent=_ua,
            device_id=lambda i: f"dev-o3-{i}",
            email=lambda i: (
                f"friend.{'abcdefghijklmnopqrstuvwxyzabcd'[i]}{'x' * (i % 3)}@outlook.com"
            ),
            occurred_at=lambda i: (NOW - timedelta(days=30 - i, hours=i % 5)).isoformat(),
        ),
        ring=False,
    ),
]


def _ring_check(answer: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in answer["explanation"]["checks"] if c["check"] == "ring"), None)


async def _copies_in(dsn: str, advocates: int) -> bool:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "attribution"})
    try:
        return bool(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM codes) >= $1"
                " AND (SELECT count(*) FROM advocates) >= $1",
                advocates,
            )
        )
    finally:
        await conn.close()


async def test_rings_go_to_review_naming_their_cluster_and_ordinary_referrals_do_not(
    env: Env,
) -> None:
    for n, g in enumerate(GROUPS):
        await link_facts(
            env.publish, advocate=g.advocate, code=f"CODE{n:03d}", customer=f"cus_{g.advocate}"
        )
    await eventually(lambda: _copies_in(env.ns.database_url, len(GROUPS)), timeout=60)

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        r = await env.client.post("/v1/conversions", json=body)
        assert r.status_code == 201, r.text
        answer: dict[str, Any] = r.json()
        return answer

    for n, g in enumerate(GROUPS):
        bodies = [{**b, "code": f"CODE{n:03d}"} for b in g.bodies]
        if n % 2:
            # together: the ring's members queue up and are decided in group commits
            g.answers = list(await asyncio.gather(*(post(b) for b in bodies)))
        else:
            g.answers = [await post(b) for b in bodies]

    members = flagged = rings_named = ordinary = false_positives = 0
    lines = []
    for g in GROUPS:
        statuses = [a["status"] for a in g.answers]
        in_review = [a for a in g.answers if a["status"] == "review"]
        if not g.ring:
            ordinary += len(g.answers)
            false_positives += len(in_review)
            assert statuses == ["attributed"] * len(statuses), (g.name, g.answers)
            for a in g.answers:
                assert a["explanation"]["risk_score"] == 0, a["explanation"]
            lines.append(f"  ordinary {g.name}: {len(in_review)}/{len(g.answers)} flagged")
            continue
        members += len(g.answers)
        flagged += len(in_review)
        # from the member that completes the cluster on, every one is in review
        expected = len(g.answers) - g.threshold + 1
        assert len(in_review) == expected, (g.name, statuses)
        ids = {a["id"] for a in g.answers}
        named = 0
        for a in in_review:
            check = _ring_check(a)
            assert check is not None and check["outcome"] == "fail", a["explanation"]
            cluster = next(c for c in check["clusters"] if c["signal"] == g.signal)
            assert cluster["count"] >= g.threshold and cluster["scope"] == "advocate"
            assert len(cluster["conversion_ids"]) == cluster["count"]
            assert set(cluster["conversion_ids"]) <= ids and a["id"] in cluster["conversion_ids"]
            assert g.signal.replace("_", " ") in check["detail"]
            assert a["explanation"]["risk_score"] >= 50
            named += 1
        rings_named += named > 0
        lines.append(
            f"  ring {g.name}: {len(in_review)}/{len(g.answers)} members in review"
            f" (cluster of {g.threshold} completes it)"
        )
    rings = sum(g.ring for g in GROUPS)
    print("\nring detection (default fraud settings):")
    print("\n".join(lines))
    print(
        f"rings detected: {rings_named}/{rings} ({100 * rings_named / rings:.0f}%);"
        f" ring members sent to review: {flagged}/{members} ({100 * flagged / members:.0f}%);"
        f" ordinary referrals flagged (false positives): {false_positives}/{ordinary}"
        f" ({100 * false_positives / ordinary:.0f}%)"
    )
    assert rings_named == rings and false_positives == 0

    # The review queue: riskiest first, each review with its score.
    r = await env.client.get("/v1/reviews", params={"limit": 200})
    assert r.status_code == 200, r.text
    scores = [i["risk_score"] for i in r.json()["items"]]
    # each with its advocate's score: flagged referrals raise it
    assert all(i["advocate_risk_score"] > 0 for i in r.json()["items"])
    assert len(scores) == flagged and scores == sorted(scores, reverse=True) and min(scores) >= 50
    by_conversion = {i["conversion_id"]: i["id"] for i in r.json()["items"]}

    # A deny on one member of a cluster offers the rest of it; one decision takes them all,
    # recorded in the audit log.
    ring = GROUPS[1]
    reviewed = [by_conversion[a["id"]] for a in ring.answers if a["status"] == "review"]
    denied = await env.client.post(
        f"/v1/reviews/{reviewed[-1]}/deny", json={"reason": "ring", "decided_by": "ops@acme"}
    )
    assert denied.status_code == 200, denied.text
    offered = denied.json()["cluster_review_ids"]
    assert sorted(offered) == sorted(reviewed[:-1]), (offered, reviewed)
    bulk = {"review_ids": offered, "decision": "deny", "reason": "one ring", "decided_by": "ops"}
    r = await env.client.post("/v1/reviews/bulk", json=bulk)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["changed_ids"]) == sorted(offered)
    assert {i["status"] for i in r.json()["items"]} == {"denied"}
    again = await env.client.post("/v1/reviews/bulk", json=bulk)
    assert again.status_code == 200 and again.json()["changed_ids"] == []
    unknown = await env.client.post(
        "/v1/reviews/bulk", json={**bulk, "review_ids": [offered[0], "rev_nope"]}
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "/review_ids/1"
    opposite = await env.client.post("/v1/reviews/bulk", json={**bulk, "decision": "approve"})
    assert opposite.status_code == 409 and opposite.json()["field"] == "/review_ids/0"
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        audit = await conn.fetch("SELECT * FROM review_audit ORDER BY created_at")
    finally:
        await conn.close()
    assert [(a["decision"], len(a["changed_ids"])) for a in audit] == [
        ("deny", len(offered)),
        ("deny", 0),
    ]
    assert audit[0]["decided_by"] == "ops" and audit[0]["key_id"]
    for a in ring.answers:
        if a["status"] == "review":
            got = await env.client.get(f"/v1/conversions/{a['id']}")
            assert got.json()["status"] == "rejected", got.json()


async def test_time_that_cannot_be_faked(env: Env) -> None:
    # A too-fast threshold well above the click's age as it reaches this service (consumer lag
    # under load), and below the time the conversion claims.
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"too_fast": {"min_seconds": 120}}},
    )
    assert r.status_code == 200, r.text
    await link_facts(env.publish)
    await env.publish("link.clicks", click("clk_" + "t" * 24, ago=timedelta(seconds=2)))

    async def click_in() -> bool:
        conn = await asyncpg.connect(
            env.ns.database_url, server_settings={"search_path": "attribution"}
        )
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM clicks"))
        finally:
            await conn.close()

    await eventually(click_in, timeout=60)
    now = datetime.now(UTC)

    ahead = await env.client.post(
        "/v1/conversions",
        json={
            "type": "signup",
            "customer_id": "cus_future",
            "code": "ANN123",
            "occurred_at": (now + timedelta(hours=2)).isoformat(),
        },
    )
    assert ahead.status_code == 422, ahead.text
    assert ahead.json()["field"] == "/occurred_at"

    # Within the clock skew allowed, but later than it arrived: the time the platform took it
    # in is what the click's age is measured to.
    late = await env.client.post(
        "/v1/conversions",
        json={
            "type": "signup",
            "customer_id": "cus_fast",
            "click_id": "clk_" + "t" * 24,
            "occurred_at": (now + timedelta(minutes=4)).isoformat(),
        },
    )
    assert late.status_code == 201, late.text
    body = late.json()
    too_fast = next(c for c in body["explanation"]["checks"] if c["check"] == "too_fast")
    assert too_fast["outcome"] == "fail", too_fast
    assert body["status"] == "review"


async def test_a_sighting_of_the_advocate_catches_a_friend_on_their_device(env: Env) -> None:
    """link-service saw the advocate on a device (their page, or enrolment): a friend
    converting from it within the self-referral window is the advocate."""
    await link_facts(env.publish)
    device = KeyedHash.of(env.settings.ip_hash_key)("dev-of-ann")
    await env.publish(
        "link.events",
        ev.AdvocateSighted(
            sighting_id="sgt_1",
            advocate_id="adv_1",
            program_id="prg_1",
            seen_at=datetime.now(UTC) - timedelta(hours=3),
            source="portal",
            device_hash=device,
        ),
    )

    async def seen() -> bool:
        conn = await asyncpg.connect(
            env.ns.database_url, server_settings={"search_path": "attribution"}
        )
        try:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM advocate_sightings"
                    " WHERE device_hash IS NOT NULL AND ip_hash IS NULL"
                )
            ) and await _copies_in(env.ns.database_url, 1)
        finally:
            await conn.close()

    await eventually(seen, timeout=60)
    friend = await env.client.post(
        "/v1/conversions",
        json={
            "type": "signup",
            "customer_id": "cus_pal",
            "code": "ANN123",
            "device_id": "dev-of-ann",
        },
    )
    assert friend.status_code == 201, friend.text
    body = friend.json()
    assert body["status"] == "rejected", body
    check = next(c for c in body["explanation"]["checks"] if c["check"] == "self_referral")
    assert check["outcome"] == "fail" and "device" in check["detail"]
    other = await env.client.post(
        "/v1/conversions",
        json={"type": "signup", "customer_id": "cus_pal2", "code": "ANN123", "device_id": "dev-2"},
    )
    assert other.json()["status"] == "attributed", other.text


async def test_an_advocate_is_blocked_after_denied_referrals(env: Env) -> None:
    """After the program's auto_block.after_denied denied referrals the advocate is blocked:
    advocate.auto_blocked.v1 (for link-service and webhooks), and their next conversion is
    denied; the advocate's risk score says why."""
    policy = {"fraud": {"auto_block": {"after_denied": 2}}}
    r = await env.client.put("/v1/programs/prg_1/attribution-settings", json=policy)
    assert r.status_code == 200, r.text
    await link_facts(env.publish)
    await eventually(lambda: _copies_in(env.ns.database_url, 1), timeout=60)
    for n in range(2):  # the advocate's own mailbox: self-referral, denied
        r = await env.client.post(
            "/v1/conversions",
            json={
                "type": "signup",
                "customer_id": f"cus_me{n}",
                "code": "ANN123",
                "email": f"Ann.Smith+{n}@gmail.com",
            },
        )
        assert r.json()["status"] == "rejected", r.text
    events = await env.events(lambda es: any(e.type == "advocate.auto_blocked.v1" for e in es))
    blocked = next(e for e in events if e.type == "advocate.auto_blocked.v1")
    assert blocked.data["advocate_id"] == "adv_1" and blocked.data["denied"] == 2
    assert blocked.data["after_denied"] == 2 and blocked.data["risk_score"] >= 20
    r = await env.client.post(
        "/v1/conversions", json={"type": "signup", "customer_id": "cus_ok", "code": "ANN123"}
    )
    body = r.json()
    assert body["status"] == "rejected", body
    check = next(c for c in body["explanation"]["checks"] if c["check"] == "blocked_advocate")
    assert check["outcome"] == "fail", check
    risk = (await env.client.get("/v1/advocates/adv_1/risk")).json()
    assert risk["denied"] == 2 and risk["auto_blocked_at"] is not None
    assert risk["risk_score"] == min(100, risk["riskiest_conversion_score"] // 2 + 20)
    assert (await env.client.get("/v1/advocates/adv_nope/risk")).status_code == 404


async def test_the_ring_window_of_the_program_is_read_whichever_way_a_conversion_comes(
    env: Env,
) -> None:
    """The ring rule's read taken ahead with a conversion's context spans the ring window of
    the program of the code it names; a conversion naming only a click (whose program the
    context does not know yet), or one decided later when its click arrives, reads again over
    its own program's window. Friends who arrived two days ago count in a 72-hour window
    whichever way the next one comes."""
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"ring": {"window_hours": 72}}},
    )
    assert r.status_code == 200, r.text
    await link_facts(env.publish)
    clicks = [f"clk_{'w' * 20}{i:04d}" for i in range(2)]
    await env.publish("link.clicks", click(clicks[0]))
    await eventually(lambda: _copies_in(env.ns.database_url, 1), timeout=60)

    async def post(customer: str, **evidence: str) -> dict[str, Any]:
        body = {"type": "signup", "customer_id": customer, "device_id": "dev-ring-w", **evidence}
        r = await env.client.post("/v1/conversions", json=body)
        assert r.status_code in (201, 202), r.text
        answer: dict[str, Any] = r.json()
        return answer

    earlier = [await post(f"cus_w{i}", code="ANN123") for i in range(2)]
    assert [a["status"] for a in earlier] == ["attributed", "attributed"]
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        await conn.execute(
            "UPDATE conversions SET received_at = received_at - interval '48 hours',"
            " occurred_at = occurred_at - interval '48 hours' WHERE customer_id LIKE 'cus_w%'"
        )

        async def click_in() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM clicks"))

        await eventually(click_in, timeout=60)
    finally:
        await conn.close()

    def cluster_of(answer: dict[str, Any]) -> int:
        check = _ring_check(answer)
        assert check is not None and check["outcome"] == "fail", answer["explanation"]
        return max(c["count"] for c in check["clusters"] if c["signal"] == "device")

    by_code = await post("cus_w2", code="ANN123")  # read ahead over the code's program window
    assert by_code["status"] == "review" and cluster_of(by_code) == 3
    by_click = await post("cus_w3", click_id=clicks[0])  # read again: the click's program's
    assert by_click["status"] == "review" and cluster_of(by_click) == 4
    waits = await post("cus_w4", click_id=clicks[1])  # decided when its click arrives
    assert waits["status"] == "pending", waits
    await env.publish("link.clicks", click(clicks[1]))

    async def decided() -> dict[str, Any] | None:
        got = (await env.client.get(f"/v1/conversions/{waits['id']}")).json()
        return got if got["status"] != "pending" else None

    later = await eventually(decided, timeout=60)
    assert later["status"] == "review" and cluster_of(later) == 5

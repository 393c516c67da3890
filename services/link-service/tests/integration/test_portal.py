"""The advocate's side: tokens and their attacks, GET /v1/me and its read model fed by
attribution and reward events (delivered twice and across two topics), CORS per program, and
the auto-enrollment of converted friends."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaProducer

from devstack.testing import (
    FRONT_AND_FASTAPI,
    StatementRecorder,
    eventually,
    scans_without_index,
    serve_in_process,
    wait_caught_up,
)
from link_service.consumers import PORTAL_GROUP
from link_service.main import create_app
from link_service.portal import domain
from link_service.portal import repository as portal_repository
from referral_events import CloudEvent, new_event
from referral_events.contracts import attribution as att
from referral_events.contracts import reward as rw
from referral_events.envelope import EventPayload
from servicekit.front import FastAPIEntry

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
KEY = "dev-only-advocate-token-key-change-me!"
NEW_KEY = "a-fresh-advocate-token-key-after-rotation"


def _refused(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _advocate(client: Any, customer: str = "cus_ann", **program: Any) -> dict[str, Any]:
    r = await client.post(
        "/v1/programs",
        json={"name": "Give 20", "landing_url": "https://shop.example.com", **program},
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": customer})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _token(client: Any, advocate_id: str, **body: Any) -> str:
    r = await client.post(f"/v1/advocates/{advocate_id}/tokens", json=body or None)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return str(r.json()["token"])


@FRONT_AND_FASTAPI
async def test_a_token_reads_me_and_nothing_else(env) -> None:
    client = env.client
    ann = await _advocate(client)
    r = await client.post(f"/v1/advocates/{ann['id']}/tokens", json={"ttl_seconds": 600})
    assert r.status_code == 201, r.text
    minted = r.json()
    expires = datetime.fromisoformat(minted["expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
    token = minted["token"]

    r = await client.get("/v1/me", headers=_bearer(token))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["advocate_id"] == ann["id"] and me["code"] == ann["code"]
    assert me["link"] == ann["link"] and me["locale"] == "en"
    assert {s["channel"] for s in me["share"]} >= {"email", "whatsapp", "x", "copy"}
    assert me["stats"] == {"clicks": 0, "friends_joined": 0, "friends_purchased": 0}
    assert me["rewards"] == [] and me["referrals"] == []
    r = await client.get(me["qr_url"], headers=_bearer(token))
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert r.headers["x-link"] == ann["link"]

    # The token reaches no API-key route, reading or writing (every /v1 route the app has),
    # and an API key is no token.
    paths = env.app.openapi()["paths"]
    tried = 0
    for path, operations in paths.items():
        if not path.startswith("/v1/") or path.startswith("/v1/me"):
            continue
        concrete = re.sub(r"\{[^}]+\}", ann["id"], path)
        for method in operations:
            r = await client.request(method.upper(), concrete, headers=_bearer(token), json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM
            tried += 1
    assert tried >= 15, tried
    _refused(await client.get("/v1/me"), 401)  # the client's default header is the API key
    _refused(await client.get("/v1/me", headers={"Authorization": ""}), 401)

    # Bounds: at most 24 h; another tenant's advocate is not found.
    r = await client.post(f"/v1/advocates/{ann['id']}/tokens", json={"ttl_seconds": 86_401})
    _refused(r, 422)
    r = await client.post(f"/v1/advocates/{ann['id']}/tokens", headers=env.foreign)
    _refused(r, 404)


@FRONT_AND_FASTAPI
async def test_every_token_attack_is_refused(env) -> None:
    client = env.client
    ann = await _advocate(client)
    bob = await _advocate(client, "cus_bob")  # another program of the same tenant
    token = await _token(client, ann["id"])
    now = datetime.now(UTC)

    def forged(key: str = KEY, kid_of: str = KEY, **claims: Any) -> str:
        body = {
            "iss": "link-service",
            "aud": "advocate",
            "sub": ann["id"],
            "tid": "acme",
            "pid": ann["program_id"],
            "scope": "me:read",
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
            **claims,
        }
        return jwt.encode(body, key, algorithm="HS256", headers={"kid": domain.key_id(kid_of)})

    assert (await client.get("/v1/me", headers=_bearer(forged()))).status_code == 200

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = bob["id"]
    tampered_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "typ": "JWT", "kid": domain.key_id(KEY)}).encode()
    ).rstrip(b"=")
    attacks_401 = {
        "expired": forged(exp=int((now - timedelta(seconds=1)).timestamp())),
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "alg none": f"{none_header.decode()}.{payload}.",
        "wrong key, real kid": forged(key="an-attacker-s-own-key-of-enough-length"),
        "unknown kid": forged(kid_of="x" * 40, key="x" * 40),
        "no scope": forged(scope="admin"),
        "another audience": forged(aud="merchant"),
        "garbage": "not.a.token",
        "an API key": env.key,
    }
    for name, bad in attacks_401.items():
        r = await client.get("/v1/me", headers=_bearer(bad))
        assert r.status_code == 401, (name, r.text)
        assert r.headers["content-type"] == PROBLEM

    # Validly signed but naming someone it cannot be: another advocate's program, another
    # tenant, an advocate that does not exist.
    attacks_403 = {
        "another program": forged(pid=bob["program_id"]),
        "another tenant": forged(tid="globex"),
        "unknown advocate": forged(sub="adv_nobody"),
    }
    for name, bad in attacks_403.items():
        r = await client.get("/v1/me", headers=_bearer(bad))
        assert r.status_code == 403, (name, r.text)
        assert r.headers["content-type"] == PROBLEM


async def test_rotating_the_signing_key_keeps_old_tokens_until_the_old_key_goes(env) -> None:
    ann = await _advocate(env.client)
    old_token = await _token(env.client, ann["id"])
    rotating = create_app(env.settings(advocate_token_keys=[NEW_KEY, KEY]))
    async with serve_in_process(rotating, env.key) as client:
        new_token = await _token(client, ann["id"])
        assert jwt.get_unverified_header(new_token)["kid"] == domain.key_id(NEW_KEY)
        for t in (old_token, new_token):
            assert (await client.get("/v1/me", headers=_bearer(t))).status_code == 200
    rotated = create_app(env.settings(advocate_token_keys=[NEW_KEY]))
    async with serve_in_process(rotated, env.key) as client:
        _refused(await client.get("/v1/me", headers=_bearer(old_token)), 401)
        assert (await client.get("/v1/me", headers=_bearer(new_token))).status_code == 200


@FRONT_AND_FASTAPI
async def test_cors_answers_the_program_s_origins_only(env) -> None:
    client = env.client
    ann = await _advocate(client)
    pid = ann["program_id"]
    r = await client.put(
        f"/v1/programs/{pid}/portal",
        json={"allowed_origins": ["https://shop.example.com", "ftp://nope"]},
    )
    _refused(r, 422)
    assert r.json()["field"] == "/allowed_origins/1"
    r = await client.put(
        f"/v1/programs/{pid}/portal",
        json={"allowed_origins": ["https://Shop.example.com/", "http://localhost:3000"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["allowed_origins"] == ["http://localhost:3000", "https://shop.example.com"]
    _refused(await client.get(f"/v1/programs/{pid}/portal", headers=env.foreign), 404)
    token = await _token(client, ann["id"])

    shop = {"Origin": "https://shop.example.com"}
    r = await client.get("/v1/me", headers={**_bearer(token), **shop})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "Origin" in r.headers["vary"]
    r = await client.get("/v1/me", headers={**_bearer(token), "Origin": "https://evil.example"})
    _refused(r, 403)
    assert "access-control-allow-origin" not in r.headers

    preflight = {"Access-Control-Request-Method": "GET"}
    r = await client.options("/v1/me", headers={**shop, **preflight})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "authorization" in r.headers["access-control-allow-headers"]
    r = await client.options("/v1/me", headers={"Origin": "https://evil.example", **preflight})
    _refused(r, 403)
    assert "access-control-allow-origin" not in r.headers

    # Another program's origin gets no answer for this program's advocate.
    other = await _advocate(client, "cus_cy")
    r = await client.put(
        f"/v1/programs/{other['program_id']}/portal",
        json={"allowed_origins": ["https://other.example"]},
    )
    assert r.status_code == 200
    r = await client.get("/v1/me", headers={**_bearer(token), "Origin": "https://other.example"})
    _refused(r, 403)


async def test_the_front_door_answers_me_as_the_route_does(env, front_door) -> None:
    """GET /v1/me with a valid token is answered before FastAPI (portal.front), with the
    very answer the route gives with the front door off; a request it cannot take (no valid
    token) goes on to FastAPI."""
    client = env.client
    ann = await _advocate(client)
    r = await client.put(
        f"/v1/programs/{ann['program_id']}/portal",
        json={"allowed_origins": ["https://shop.example.com"]},
    )
    assert r.status_code == 200, r.text
    token = await _token(client, ann["id"])
    shop = {**_bearer(token), "Origin": "https://shop.example.com"}
    front = await client.get("/v1/me", headers=shop)
    assert front.status_code == 200, front.text
    assert front_door == ["/v1/me"]
    _refused(await client.get("/v1/me", headers=_bearer("not.a.token")), 401)
    assert front_door == ["/v1/me"]

    # The same app, entered behind its front door: FastAPI's routing, dependencies, the route.
    transport = httpx.ASGITransport(app=FastAPIEntry(env.app))
    async with httpx.AsyncClient(transport=transport, base_url=client.base_url) as fastapi:
        route = await fastapi.get("/v1/me", headers=shop)
    assert route.status_code == 200, route.text
    assert front_door == ["/v1/me"]
    assert front.content == route.content
    for header in ("content-type", "cache-control", "vary", "access-control-allow-origin"):
        assert front.headers[header] == route.headers[header], header

    # The share links are remembered by what they are made of: a new message or program name
    # shows on the next read.
    r = await client.patch(
        f"/v1/programs/{ann['program_id']}",
        json={"name": "Give 25", "share_templates": {"sms": "Use {code} at {program}"}},
    )
    assert r.status_code == 200, r.text
    share = {s["channel"]: s for s in (await client.get("/v1/me", headers=shop)).json()["share"]}
    assert share["sms"]["message"] == f"Use {ann['code']} at Give 25 {share['sms']['url']}"
    assert "Give%2025" in share["email"]["intent_url"]

    # The page's own pool opened as the service started (its connections act for every tenant).
    reads = env.app.state.portal_reads
    await eventually(lambda: reads.pool is not env.app.state.runtime.pool)
    async with reads.pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_setting('app.tenant_id')") == "*"


class _Publisher:
    def __init__(self, env: Any, producer: AIOKafkaProducer) -> None:
        self.env, self.producer = env, producer

    async def __call__(self, topic: str, payload: EventPayload, *, key: str) -> CloudEvent:
        event = new_event(payload, source="/services/test", tenant_id="acme")
        await self.send(topic, event, key)
        return event

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        await self.producer.send_and_wait(
            self.env.ns.topic_prefix + topic, event.to_json(), key=key.encode()
        )


@pytest.fixture
async def publish(env) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=env.ns.kafka_bootstrap_servers)
    await producer.start()
    try:
        yield _Publisher(env, producer)
    finally:
        await producer.stop()


async def test_me_folds_attribution_and_reward_events_exactly_once(env, publish) -> None:
    client = env.client
    ann = await _advocate(client)
    adv, pid = ann["id"], ann["program_id"]
    token = await _token(client, adv)
    now = datetime.now(UTC)
    r = await client.get(f"/r/{ann['code']}", headers={"user-agent": "Mozilla/5.0 Firefox/120"})
    assert r.status_code == 302

    # A reward that overtakes its conversion (two topics) still marks the referral rewarded.
    pending = rw.RewardPending(
        reward_id="rwd_1",
        program_id=pid,
        advocate_id=adv,
        holder_id=adv,
        role="advocate",
        conversion_id="cnv_buy",
        kind="credit",
        amount=2000,
        unit="USD",
        available_at=now,
    )
    friend_reward = rw.RewardAvailable(
        reward_id="rwd_f",
        program_id=pid,
        advocate_id=adv,
        holder_id="cus_bob",
        role="friend",
        conversion_id="cnv_buy",
        kind="credit",
        amount=1000,
        unit="USD",
    )
    for e in (pending, friend_reward):
        await publish("reward.events", e, key=adv)
    events = [
        att.ReferralAttributed(
            referral_id="ref_1",
            program_id=pid,
            advocate_id=adv,
            friend_customer_id="cus_bob",
            conversion_id="cnv_join",
            evidence="click",
            attributed_at=now,
            friend_email="bob.smith@example.com",
        ),
        att.ConversionAttributed(
            conversion_id="cnv_join",
            referral_id="ref_1",
            program_id=pid,
            advocate_id=adv,
            friend_customer_id="cus_bob",
            conversion_type="signup",
            occurred_at=now,
            evidence="click",
        ),
        att.ConversionAttributed(
            conversion_id="cnv_buy",
            referral_id="ref_1",
            program_id=pid,
            advocate_id=adv,
            friend_customer_id="cus_bob",
            conversion_type="purchase",
            amount_minor=5990,
            currency="USD",
            is_first_purchase=True,
            occurred_at=now,
            evidence="click",
        ),
        att.ConversionAttributed(
            conversion_id="cnv_cy",
            referral_id="ref_2",
            program_id=pid,
            advocate_id=adv,
            friend_customer_id="cus_cy_1234",
            conversion_type="signup",
            occurred_at=now,
            evidence="code",
        ),
    ]
    sent = [await publish("attribution.events", e, key=adv) for e in events]
    for e in sent:  # every event a second time: nothing doubles
        await publish.send("attribution.events", e, adv)
    available = rw.RewardAvailable(**{**pending.model_dump(), "reward_id": "rwd_1"})
    redeemed = rw.RewardRedeemed(
        redemption_id="rdm_1",
        holder_id=adv,
        role="advocate",
        amount=500,
        unit="USD",
        advocate_id=adv,
    )
    points = rw.RewardPending(
        reward_id="rwd_2",
        program_id=pid,
        advocate_id=adv,
        holder_id=adv,
        role="advocate",
        conversion_id="cnv_cy",
        kind="points",
        amount=50,
        unit="POINTS",
        available_at=now,
    )
    for e in (available, redeemed, points):
        ce = await publish("reward.events", e, key=adv)
        await publish.send("reward.events", ce, adv)

    async def settled() -> dict[str, Any]:
        r = await client.get("/v1/me", headers=_bearer(token))
        me = dict(r.json())
        assert me["rewards"] == [
            {"unit": "POINTS", "pending": 50, "available": 0, "redeemed": 0},
            {"unit": "USD", "pending": 0, "available": 1500, "redeemed": 500},
        ], me["rewards"]
        # attribution.events come through another topic: no order with the reward events
        assert me["stats"] == {"clicks": 1, "friends_joined": 2, "friends_purchased": 1}
        return me

    me = await eventually(settled)
    by_friend = {r["friend"]: r["status"] for r in me["referrals"]}
    assert by_friend == {"b•••@e•••.com": "rewarded", "Friend 34•••": "rewarded"}, by_friend
    assert me["progress"]["successful_referrals"] == 2

    refund = att.ConversionRefunded(
        conversion_id="cnv_buy",
        refund_id="rf_1",
        program_id=pid,
        advocate_id=adv,
        friend_customer_id="cus_bob",
        conversion_type="purchase",
        amount_minor=5990,
        currency="USD",
        refunded_total_minor=5990,
        full=True,
        refunded_at=now,
    )
    await publish("attribution.events", refund, key=adv)

    async def refunded() -> bool:
        me = (await client.get("/v1/me", headers=_bearer(token))).json()
        return {r["friend"]: r["status"] for r in me["referrals"]}["b•••@e•••.com"] == "refunded"

    await eventually(refunded)


async def test_converted_friends_are_enrolled_once_naming_who_referred_them(env, publish) -> None:
    client = env.client
    ann = await _advocate(client)
    adv, pid = ann["id"], ann["program_id"]
    r = await client.put(f"/v1/programs/{pid}/portal", json={"auto_enroll": "purchase"})
    assert r.status_code == 200 and r.json()["auto_enroll"] == "purchase"
    now = datetime.now(UTC)

    def conversion(kind: str, cid: str) -> att.ConversionAttributed:
        return att.ConversionAttributed(
            conversion_id=cid,
            referral_id="ref_9",
            program_id=pid,
            advocate_id=adv,
            friend_customer_id="cus_dee",
            conversion_type=kind,
            occurred_at=now,
            evidence="click",
        )

    await publish("attribution.events", conversion("signup", "cnv_s"), key=adv)
    buy = await publish("attribution.events", conversion("purchase", "cnv_p"), key=adv)
    await publish.send("attribution.events", buy, adv)
    await publish("attribution.events", conversion("purchase", "cnv_p2"), key=adv)

    await wait_caught_up(env.ns.kafka_bootstrap_servers, [env.ns.topic_prefix + PORTAL_GROUP])

    def published(events: list[CloudEvent]) -> bool:
        return any(e.type == "referral.friend_converted.v1" for e in events)

    events = await env.events("link.events", published)
    enrolled = [
        e for e in events if e.type == "advocate.enrolled.v1" and e.data["customer_id"] == "cus_dee"
    ]
    converted = [e for e in events if e.type == "referral.friend_converted.v1"]
    assert len(enrolled) == 1 and len(converted) == 1
    assert enrolled[0].data["referred_by"] == adv
    friend = converted[0].data
    assert friend["advocate_id"] == adv and friend["conversion_id"] == "cnv_p"
    assert friend["friend_advocate_id"] == enrolled[0].data["advocate_id"]
    assert friend["friend_link_url"] == enrolled[0].data["link_url"]
    r = await client.get(f"/v1/advocates/{friend['friend_advocate_id']}")
    assert r.status_code == 200 and r.json()["code"] == friend["friend_code"]


async def test_share_reminders_follow_the_program_s_schedule_until_shared(env) -> None:
    from link_service.domain import Links
    from link_service.portal import handlers

    client = env.client
    ann = await _advocate(client, "cus_ann")
    pid = ann["program_id"]
    r = await client.put(
        f"/v1/programs/{pid}/portal", json={"reminder_max": 2, "reminder_interval_days": 3}
    )
    assert r.status_code == 200 and r.json()["reminder_max"] == 2
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_no_consent"})
    silent = r.json()
    enrolled = []
    for customer in ("cus_consent", "cus_sharer"):
        r = await client.post(
            f"/v1/programs/{pid}/advocates",
            json={"customer_id": customer, "marketing_consent": True},
        )
        enrolled.append(r.json())
    keen, sharer = enrolled
    r = await client.get(f"/r/{sharer['code']}", headers={"user-agent": "Mozilla/5.0 Firefox/120"})
    assert r.status_code == 302
    rt = env.app.state.runtime
    links = Links(env.settings().public_base_url)
    now = datetime.now(UTC)

    async def run_at(days: float) -> None:
        async with rt.transaction() as conn:
            await handlers.send_due_reminders(conn, now + timedelta(days=days), links, 100)

    for days in (1, 3.01, 4, 6.02, 9.03, 12.04):  # due at +3 d and +6 d, then no more
        await run_at(days)

    def reminders(events: list[CloudEvent]) -> list[CloudEvent]:
        return [e for e in events if e.type == "advocate.share_reminder_due.v1"]

    await env.events("link.events", lambda es: len(reminders(es)) >= 2)
    sent = reminders(await env.all_events("link.events"))
    assert [(e.data["advocate_id"], e.data["reminder"]) for e in sent] == [
        (keen["id"], 1),
        (keen["id"], 2),
    ], [e.data for e in sent]
    assert sent[0].data["link_url"] == keen["link"] and sent[0].data["max_reminders"] == 2
    assert silent["id"] not in {e.data["advocate_id"] for e in sent}


async def test_the_read_model_s_statements_read_through_indexes(env) -> None:
    """Every statement the portal's consumers run for an event finds its rows through an index:
    none reads a whole table, whose cost would grow with every advocate's history (settling a
    referral's "rewarded" flag read all rewards of all advocates)."""
    rec = StatementRecorder()
    conn: Any = rec
    at = datetime.now(UTC)
    await portal_repository.upsert_referral(
        conn, referral_id="ref_1", tenant_id="acme", advocate_id="adv_1", friend_label="f",
        at=at, relabel=True)  # fmt: skip
    await portal_repository.link_conversion(conn, "cnv_1", "ref_1")
    await portal_repository.mark_referral(conn, "ref_1", "purchased")
    await portal_repository.mark_referral_of(conn, "cnv_1", "refunded")
    await portal_repository.settle_rewarded(conn, "ref_1", "cnv_1")
    await portal_repository.upsert_reward(
        conn, reward_id="rwd_1", advocate_id="adv_1", conversion_id="cnv_1", unit="USD",
        amount=2000, state="pending")  # fmt: skip
    await portal_repository.reduce_reward(conn, "rwd_1", 500)
    await portal_repository.insert_redemption(
        conn, redemption_id="red_1", advocate_id="adv_1", unit="USD", amount=100
    )
    await portal_repository.set_milestone(conn, "adv_1", 3, 3)
    await portal_repository.set_referred_by(conn, "adv_1", "adv_2")
    assert len(rec.statements) == 10
    assert await scans_without_index(env.ns.database_url, "link", rec.statements) == {}

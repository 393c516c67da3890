"""Advocate sightings (issue #20): an enrolment through the API that says where the advocate is,
and the advocate opening their refer-a-friend page, announce advocate.sighted.v1 with hashes
only (the keyed hash attribution applies to friends' IPs and devices), once a day per network
and device however often the page is opened."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from devstack.testing import wait_caught_up
from link_service.config import Settings
from link_service.consumers import PORTAL_GROUP
from referral_events import new_event
from referral_events.contracts import attribution as att

from .conftest import LinkEnv

pytestmark = pytest.mark.integration

SIGHTED = "advocate.sighted.v1"


def _hash(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


async def test_enrolment_and_the_advocate_s_page_are_sightings(env: LinkEnv) -> None:
    client = env.client
    key = Settings(**env.ns.settings_env()).ip_hash_key
    r = await client.post(
        "/v1/programs", json={"name": "Give 20", "landing_url": "https://shop.example.com"}
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = await client.post(
        f"/v1/programs/{pid}/advocates",
        json={"customer_id": "cus_ann", "ip": "203.0.113.9", "device_id": "dev-ann"},
    )
    assert r.status_code == 201, r.text
    ann = r.json()
    # enrolled without saying where: no sighting
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_bob"})
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "x", "ip": "1"})
    assert r.status_code == 422, r.text

    r = await client.post(f"/v1/advocates/{ann['id']}/tokens", json=None)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    for _ in range(3):  # the page opened three times from one place: one sighting
        r = await client.get(
            "/v1/me", headers={"Authorization": f"Bearer {token}", "X-Device-Id": "dev-ann-2"}
        )
        assert r.status_code == 200, r.text

    events = await env.events(
        "link.events", lambda es: sum(e.type == SIGHTED for e in es) >= 2, wait=30
    )
    sighted = [e for e in events if e.type == SIGHTED]
    assert [e.data["source"] for e in sighted] == ["enrollment", "portal"]
    first, page = sighted[0].data, sighted[1].data
    assert first["advocate_id"] == ann["id"] and first["program_id"] == pid
    assert first["ip_hash"] == _hash(key, "203.0.113.9")
    assert first["device_hash"] == _hash(key, "dev-ann")
    assert page["device_hash"] == _hash(key, "dev-ann-2") and page["ip_hash"]
    # nothing in clear
    raw = " ".join(str(e.data) for e in sighted)
    assert "203.0.113.9" not in raw and "dev-ann" not in raw
    assert len(sighted) == 2


async def test_an_advocate_attribution_blocked_is_blocked_here(env: LinkEnv) -> None:
    """advocate.auto_blocked.v1 (attribution blocked the advocate for their denied referrals)
    blocks them here, announced as any block is (advocate.blocked.v1); delivered twice, once."""
    client = env.client
    r = await client.post(
        "/v1/programs", json={"name": "Give 20", "landing_url": "https://shop.example.com"}
    )
    pid = r.json()["id"]
    r = await client.post(f"/v1/programs/{pid}/advocates", json={"customer_id": "cus_ann"})
    adv = r.json()["id"]
    event = new_event(
        att.AdvocateAutoBlocked(
            advocate_id=adv,
            program_id=pid,
            denied=5,
            after_denied=5,
            risk_score=80,
            blocked_at=datetime.now(UTC),
        ),
        source="/services/attribution-service",
        tenant_id="acme",
    )
    producer = AIOKafkaProducer(bootstrap_servers=env.ns.kafka_bootstrap_servers)
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(
                env.ns.topic_prefix + "attribution.events", event.to_json(), key=adv.encode()
            )
    finally:
        await producer.stop()
    events = await env.events(
        "link.events", lambda es: any(e.type == "advocate.blocked.v1" for e in es)
    )
    await wait_caught_up(env.ns.kafka_bootstrap_servers, [env.ns.topic_prefix + PORTAL_GROUP])
    blocked = [e for e in await env.all_events("link.events") if e.type == "advocate.blocked.v1"]
    assert len(blocked) == 1 and blocked[0].data["advocate_id"] == adv, events
    assert "5 referrals denied" in blocked[0].data["reason"]
    r = await client.get(f"/v1/advocates/{adv}")
    assert r.json()["blocked"] is True

"""Program settings, fraud screening with the review queue, refunds, subscriptions and custom
types over HTTP on real Kafka + Postgres."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from devstack.testing import eventually
from referral_events.contracts import link as ev
from servicekit.problems import pointer

from .conftest import Env, click, link_facts

pytestmark = pytest.mark.integration


async def _decided(env: Env, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """POST a conversion; while its code is still on its way it waits (202): poll until decided."""
    headers = {"Idempotency-Key": key} if key else {}
    r = await env.client.post("/v1/conversions", json=body, headers=headers)
    assert r.status_code in (200, 201, 202), r.text
    conv_id = r.json()["id"]

    async def decided() -> dict[str, Any] | None:
        got: dict[str, Any] = (await env.client.get(f"/v1/conversions/{conv_id}")).json()
        return got if got["status"] != "pending" else None

    result: dict[str, Any] = await eventually(decided, timeout=60)
    return result


async def test_settings_api(env: Env) -> None:
    # Before the program's event arrived (and no settings were written), no such program.
    r = await env.client.get("/v1/programs/prg_1/attribution-settings")
    assert r.status_code == 404 and r.json()["field"] == "/program_id", r.text
    await link_facts(env.publish)

    async def known() -> bool:
        got = await env.client.get("/v1/programs/prg_1/attribution-settings")
        return got.status_code == 200

    await eventually(known, timeout=60)
    r = await env.client.get("/v1/programs/prg_1/attribution-settings")
    assert r.status_code == 200 and r.json()["settings"]["window_days"] == 30
    assert r.json()["settings"]["model"] == "last_click"

    bad = await env.client.put("/v1/programs/prg_1/attribution-settings", json={"window_days": 400})
    assert bad.status_code == 422 and bad.json()["field"] == "/window_days"
    assert bad.headers["content-type"] == "application/problem+json"
    bad = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"velocity": {"per_advocate_hour": 0}}},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "/fraud/velocity/per_advocate_hour"

    body = {
        "model": "first_click",
        "window_days": 60,
        "attachment": {"mode": "first_n", "n": 3},
        "custom_types": ["demo_booked"],
        "fraud": {"disposable_email": {"action": "deny"}, "too_fast": {"enabled": False}},
    }
    r = await env.client.put("/v1/programs/prg_1/attribution-settings", json=body)
    assert r.status_code == 200, r.text
    got = (await env.client.get("/v1/programs/prg_1/attribution-settings")).json()["settings"]
    assert got["model"] == "first_click" and got["attachment"] == {
        "mode": "first_n",
        "n": 3,
        "months": 12,
    }
    assert got["fraud"]["disposable_email"] == {"enabled": True, "action": "deny"}

    # another tenant sees no such program once its copy is here
    async def foreign_404() -> bool:
        r = await env.client.get("/v1/programs/prg_1/attribution-settings", headers=env.foreign)
        return r.status_code == 404

    await eventually(foreign_404)
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings", json={}, headers=env.foreign
    )
    assert r.status_code == 404


async def test_review_queue_approve_and_deny(env: Env) -> None:
    await link_facts(env.publish)
    first = await _decided(
        env,
        {"type": "signup", "customer_id": "cus_f1", "code": "ANN123", "email": "f1@mailinator.com"},
    )
    assert first["status"] == "review" and first["decision"] == "review"
    checks = {c["check"]: c for c in first["explanation"]["checks"]}
    assert checks["disposable_email"]["outcome"] == "fail"
    assert checks["disposable_email"]["action"] == "review"
    assert checks["self_referral"]["outcome"] == "pass"
    assert first["explanation"]["evidence"]["kind"] == "code"
    assert first["explanation"]["window_days"] == 30
    second = await _decided(
        env,
        {"type": "signup", "customer_id": "cus_f2", "code": "ANN123", "email": "f2@mailinator.com"},
    )
    assert second["status"] == "review"

    page = (await env.client.get("/v1/reviews")).json()
    assert {i["conversion_id"] for i in page["items"]} == {first["id"], second["id"]}
    by_conv = {i["conversion_id"]: i for i in page["items"]}
    rev1, rev2 = by_conv[first["id"]]["id"], by_conv[second["id"]]["id"]
    assert by_conv[first["id"]]["reasons"] == ["disposable_email"]
    assert (await env.client.get(f"/v1/reviews/{rev1}", headers=env.foreign)).status_code == 404

    missing = await env.client.post(f"/v1/reviews/{rev1}/approve", json={})
    assert missing.status_code == 422 and missing.json()["field"] == "/reason"
    r = await env.client.post(
        f"/v1/reviews/{rev1}/approve", json={"reason": "known customer", "decided_by": "ops@acme"}
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    again = await env.client.post(f"/v1/reviews/{rev1}/approve", json={"reason": "again"})
    assert again.status_code == 200 and again.json()["decision_reason"] == "known customer"
    clash = await env.client.post(f"/v1/reviews/{rev1}/deny", json={"reason": "changed mind"})
    assert clash.status_code == 409
    r = await env.client.post(f"/v1/reviews/{rev2}/deny", json={"reason": "throwaway address"})
    assert r.json()["status"] == "denied"

    got = (await env.client.get(f"/v1/conversions/{first['id']}")).json()
    assert got["status"] == "attributed" and got["explanation"]["review"]["status"] == "approved"
    assert (await env.client.get(f"/v1/conversions/{second['id']}")).json()["status"] == "rejected"
    assert (await env.client.get("/v1/reviews")).json()["items"] == []
    assert len((await env.client.get("/v1/reviews?status=approved")).json()["items"]) == 1

    events = await env.events(lambda es: len(es) >= 7)
    kinds = sorted((e.type, e.data["conversion_id"]) for e in events)
    assert kinds == sorted(
        [
            ("conversion.flagged.v1", first["id"]),
            ("conversion.flagged.v1", second["id"]),
            ("review.decided.v1", first["id"]),
            ("review.decided.v1", second["id"]),
            ("referral.attributed.v1", first["id"]),
            ("conversion.attributed.v1", first["id"]),
            ("conversion.rejected.v1", second["id"]),
        ]
    )
    attributed = next(e for e in events if e.type == "conversion.attributed.v1")
    assert attributed.data["review_id"] == rev1 and attributed.data["decision"] == "allow"
    rejected = next(e for e in events if e.type == "conversion.rejected.v1")
    assert rejected.data["reasons"] == ["disposable_email", "review_denied"]
    # nothing denied reaches a reward: no conversion.attributed for the denied conversion
    assert not [
        e
        for e in events
        if e.type == "conversion.attributed.v1" and e.data["conversion_id"] == second["id"]
    ]


async def test_screening_rejects_self_referral_blocked_and_velocity(env: Env) -> None:
    await link_facts(env.publish)
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings",
        json={"fraud": {"velocity": {"per_advocate_hour": 2}}},
    )
    assert r.status_code == 200
    # the advocate's own gmail address, dotted and tagged differently
    own = await _decided(
        env,
        {
            "type": "signup",
            "customer_id": "cus_x",
            "code": "ann123",
            "email": "AnnSmith+deal@googlemail.com",
        },
    )
    assert own["status"] == "rejected"
    detail = {c["check"]: c for c in own["explanation"]["checks"]}["self_referral"]
    assert detail == {
        "check": "self_referral",
        "outcome": "fail",
        "detail": "same email after normalisation",
        "action": "deny",
    }
    ok1 = await _decided(env, {"type": "signup", "customer_id": "cus_v1", "code": "ANN123"})
    ok2 = await _decided(env, {"type": "signup", "customer_id": "cus_v2", "code": "ANN123"})
    fast = await _decided(env, {"type": "signup", "customer_id": "cus_v3", "code": "ANN123"})
    assert [ok1["status"], ok2["status"], fast["status"]] == ["attributed", "attributed", "review"]

    await env.publish("link.events", ev.AdvocateBlocked(advocate_id="adv_1", program_id="prg_1"))

    # the first tries may be decided before the block arrives; a new key each time then
    attempts = iter(range(100))

    async def eventually_blocked() -> bool:
        n = next(attempts)
        got = await _decided(env, {"type": "signup", "customer_id": f"cus_b{n}", "code": "ANN123"})
        return got["status"] == "rejected" and any(
            c["check"] == "blocked_advocate" and c["outcome"] == "fail"
            for c in got["explanation"]["checks"]
        )

    await eventually(eventually_blocked, timeout=60)


async def test_refunds_subscriptions_and_custom_types(env: Env) -> None:
    await link_facts(env.publish)
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings", json={"custom_types": ["demo_booked"]}
    )
    assert r.status_code == 200
    purchase = await _decided(
        env,
        {
            "type": "purchase",
            "customer_id": "cus_p",
            "code": "ANN123",
            "order_id": "o-1",
            "amount_minor": 10000,
            "currency": "USD",
        },
    )
    assert purchase["status"] == "attributed" and purchase["amount"] == "100.00"
    assert purchase["is_first_purchase"] and purchase["sequence"] == 1
    url = f"/v1/conversions/{purchase['id']}/refunds"

    r = await env.client.post(url, json={"refund_id": "r1", "amount": "25.00"})
    assert r.status_code == 201, r.text
    assert r.json()["refunded_total"] == "25.00" and r.json()["full"] is False
    again = await env.client.post(url, json={"refund_id": "r1", "amount": "25.00"})
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    clash = await env.client.post(url, json={"refund_id": "r1", "amount": "26.00"})
    assert clash.status_code == 409
    for body, field in [
        ({"refund_id": "r9", "amount": "80.00"}, "amount"),
        ({"refund_id": "r9", "amount": "1.00", "currency": "EUR"}, "currency"),
        ({"refund_id": "r9", "amount": "-1.00"}, "amount"),
        ({"refund_id": "r9", "amount": "1.001"}, "amount"),
        ({"amount": "1.00"}, "refund_id"),
    ]:
        bad = await env.client.post(url, json=body)
        assert bad.status_code == 422 and bad.json()["field"] == pointer(field), (body, bad.text)
    rest = await env.client.post(url, json={}, headers={"Idempotency-Key": "full-1"})
    assert rest.status_code == 201 and rest.json()["amount"] == "75.00" and rest.json()["full"]
    got = (await env.client.get(f"/v1/conversions/{purchase['id']}")).json()
    assert got["refunded"] == "100.00" and len(got["refunds"]) == 2
    assert (await env.client.post(url, json={"refund_id": "r3"})).status_code == 422
    unknown = await env.client.post("/v1/conversions/cnv_nope/refunds", json={"refund_id": "x"})
    assert unknown.status_code == 404

    pay1 = await _decided(
        env,
        {
            "type": "subscription_payment",
            "customer_id": "cus_s",
            "code": "ANN123",
            "order_id": "inv_1",
            "subscription_id": "sub_1",
            "amount": "9.99",
            "currency": "EUR",
        },
    )
    pay2 = await _decided(
        env,
        {
            "type": "subscription_payment",
            "customer_id": "cus_s",
            "order_id": "inv_2",
            "subscription_id": "sub_1",
            "amount": "9.99",
            "currency": "EUR",
        },
    )
    assert (pay1["sequence"], pay2["sequence"]) == (1, 2)
    assert pay2["evidence"] == "existing_referral" and pay2["advocate_id"] == "adv_1"
    r = await env.client.post("/v1/subscriptions/sub_1/cancellation", json={})
    assert r.status_code == 201 and r.json()["advocate_id"] == "adv_1"
    assert (
        await env.client.post("/v1/subscriptions/sub_1/cancellation", json={})
    ).status_code == 200

    demo = await _decided(env, {"type": "demo_booked", "customer_id": "cus_d", "code": "ANN123"})
    assert demo["status"] == "attributed"

    events = await env.events(lambda es: len(es) >= 10)
    refunds = sorted(
        (e.data["amount_minor"], e.data["refunded_total_minor"], e.data["full"])
        for e in events
        if e.type == "conversion.refunded.v1"
    )
    assert refunds == [(2500, 2500, False), (7500, 10000, True)]
    cancelled = [e for e in events if e.type == "subscription.cancelled.v1"]
    assert len(cancelled) == 1 and cancelled[0].data["subscription_id"] == "sub_1"
    custom = next(
        e
        for e in events
        if e.type == "conversion.attributed.v1" and e.data["conversion_id"] == demo["id"]
    )
    assert (custom.data["conversion_type"], custom.data["custom_type"]) == ("custom", "demo_booked")
    sub_events = sorted(
        e.data["sequence"]
        for e in events
        if e.type == "conversion.attributed.v1"
        and e.data["conversion_type"] == "subscription_payment"
    )
    assert sub_events == [1, 2]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"evidence_grace_seconds": 2, "pending_sweep_interval_seconds": 0.3}


async def test_evidence_that_never_arrives_expires_then_is_refused(env: Env) -> None:
    await link_facts(env.publish)
    lost = "clk_" + "q" * 24
    r = await env.client.post(
        "/v1/conversions", json={"type": "signup", "customer_id": "cus_l", "click_id": lost}
    )
    assert r.status_code == 202
    conv_id = r.json()["id"]

    async def decided() -> dict[str, Any] | None:
        got: dict[str, Any] = (await env.client.get(f"/v1/conversions/{conv_id}")).json()
        return got if got["status"] != "pending" else None

    got = await eventually(decided, timeout=30)
    assert got["status"] == "organic" and "grace period" in got["explanation"]["note"]
    r = await env.client.post(
        "/v1/conversions", json={"type": "signup", "customer_id": "cus_m", "click_id": lost}
    )
    assert r.status_code == 422 and r.json()["field"] == "/click_id"

    # a click that does arrive within the grace period is used
    await env.publish("link.clicks", click("clk_" + "r" * 24))
    r = await env.client.post(
        "/v1/conversions",
        json={"type": "signup", "customer_id": "cus_n", "click_id": "clk_" + "r" * 24},
    )
    assert r.status_code in (201, 202)


async def test_concurrent_purchases_of_one_friend_are_numbered_once_each(env: Env) -> None:
    await link_facts(env.publish)
    await _decided(env, {"type": "signup", "customer_id": "cus_c", "code": "ANN123"})

    async def purchase(n: int) -> dict[str, Any]:
        r = await env.client.post(
            "/v1/conversions",
            json={
                "type": "purchase",
                "customer_id": "cus_c",
                "order_id": f"oc-{n}",
                "amount": "10.00",
                "currency": "USD",
            },
        )
        assert r.status_code == 201, r.text
        got: dict[str, Any] = r.json()
        return got

    results = await asyncio.gather(*(purchase(n) for n in range(8)))
    assert sorted(r["sequence"] for r in results) == list(range(1, 9))
    assert sum(r["is_first_purchase"] for r in results) == 1


async def test_first_click_chooses_among_the_clicks_the_customer_named(env: Env) -> None:
    await link_facts(env.publish)
    await link_facts(env.publish, advocate="adv_2", code="BOB456", customer="cus_adv2", email=None)
    r = await env.client.put(
        "/v1/programs/prg_1/attribution-settings", json={"model": "first_click"}
    )
    assert r.status_code == 200
    first, later = "clk_" + "1" * 32, "clk_" + "2" * 32
    await env.publish("link.clicks", click(first, ago=timedelta(hours=2)))
    await env.publish("link.clicks", click(later, advocate="adv_2", ago=timedelta(hours=1)))
    signup = await _decided(env, {"type": "signup", "customer_id": "cus_fc", "click_id": first})
    assert signup["advocate_id"] == "adv_1"
    purchase = await _decided(
        env,
        {
            "type": "purchase",
            "customer_id": "cus_fc",
            "click_id": later,
            "order_id": "fc-1",
            "amount": "5.00",
            "currency": "USD",
        },
    )
    # the customer's first click (named by their signup) wins over the one named now
    assert purchase["status"] == "attributed" and purchase["advocate_id"] == "adv_1"
    assert purchase["explanation"]["model"] == "first_click"
    assert purchase["explanation"]["evidence"]["click_id"] == first


def _of(events: list[Any], conv_id: str) -> list[tuple[str, Any]]:
    return [
        (e.type, e.data.get("refunded_total_minor"))
        for e in events
        if e.data.get("conversion_id") == conv_id
        and e.type in ("conversion.attributed.v1", "conversion.refunded.v1")
    ]


async def test_a_refund_while_the_conversion_waits_for_review_follows_its_approval(
    env: Env,
) -> None:
    # The review: the refund was recorded unpublished and the approval attributed the full
    # amount; the reward never learnt of the refund.
    await link_facts(env.publish)
    conv = await _decided(
        env,
        {
            "type": "purchase",
            "customer_id": "cus_w",
            "code": "ANN123",
            "email": "w@mailinator.com",
            "order_id": "o-w",
            "amount_minor": 10000,
            "currency": "USD",
        },
    )
    assert conv["status"] == "review"
    url = f"/v1/conversions/{conv['id']}/refunds"
    r = await env.client.post(url, json={"refund_id": "rw", "amount": "40.00"})
    assert r.status_code == 201, r.text
    review = (await env.client.get("/v1/reviews")).json()["items"][0]["id"]
    ok = await env.client.post(f"/v1/reviews/{review}/approve", json={"reason": "known"})
    assert ok.status_code == 200, ok.text
    # a refund after the approval is published as before
    r = await env.client.post(url, json={"refund_id": "rw2", "amount": "10.00"})
    assert r.status_code == 201, r.text
    events = await env.events(lambda es: len(_of(es, conv["id"])) >= 3)
    assert _of(events, conv["id"]) == [
        ("conversion.attributed.v1", None),
        ("conversion.refunded.v1", 4000),
        ("conversion.refunded.v1", 5000),
    ]


async def test_a_refund_while_the_conversion_waits_for_its_click_follows_the_click(
    env: Env,
) -> None:
    await link_facts(env.publish)
    click_id = "clk_" + "w" * 24
    r = await env.client.post(
        "/v1/conversions",
        json={
            "type": "purchase",
            "customer_id": "cus_p2",
            "click_id": click_id,
            "order_id": "o-p2",
            "amount_minor": 10000,
            "currency": "USD",
        },
    )
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    conv_id = r.json()["id"]
    full = await env.client.post(f"/v1/conversions/{conv_id}/refunds", json={"refund_id": "rp"})
    assert full.status_code == 201 and full.json()["full"], full.text
    await env.publish("link.clicks", click(click_id))
    events = await env.events(lambda es: len(_of(es, conv_id)) >= 2)
    assert _of(events, conv_id) == [
        ("conversion.attributed.v1", None),
        ("conversion.refunded.v1", 10000),
    ]

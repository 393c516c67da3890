"""Conversions over HTTP against real Kafka + Postgres, with link-service's events produced to
the topics as link-service would (fixtures in conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from attribution_service.programs import handlers
from devstack.testing import FRONT_AND_FASTAPI, eventually, read_topic
from referral_events import CloudEvent, new_event
from referral_events.contracts import link as ev
from servicekit.problems import pointer

# Every test twice: the hot path answered by the front door, and by FastAPI alone.
pytestmark = [pytest.mark.integration, FRONT_AND_FASTAPI]
CLICK_ID = "clk_" + "a" * 24


async def _link_facts(publish) -> None:
    await publish(
        "link.events",
        ev.ProgramCreated(
            program_id="prg_1",
            name="p",
            status="active",
            landing_url="https://s.example",
            allowed_domains=["s.example"],
        ),
    )
    await publish(
        "link.events",
        ev.AdvocateEnrolled(advocate_id="adv_1", program_id="prg_1", customer_id="cus_adv"),
    )
    await publish(
        "link.events", ev.CodeCreated(code="ANN123", advocate_id="adv_1", program_id="prg_1")
    )


async def test_conversion_waits_for_its_click_then_attributes(env) -> None:
    client, publish, ns = env.client, env.publish, env.ns
    await _link_facts(publish)
    r = await client.post(
        "/v1/conversions",
        json={"type": "signup", "customer_id": "cus_friend", "click_id": CLICK_ID},
    )
    assert r.status_code == 202, r.text
    conv_id = r.json()["id"]

    await publish(
        "link.clicks",
        ev.LinkClicked(
            click_id=CLICK_ID,
            code="ANN123",
            advocate_id="adv_1",
            program_id="prg_1",
            clicked_at=datetime.now(UTC) - timedelta(minutes=1),
        ),
    )

    async def attributed() -> bool:
        got = (await client.get(f"/v1/conversions/{conv_id}")).json()
        return got["status"] == "attributed"

    await eventually(attributed)

    r = await client.post(
        "/v1/conversions",
        json={
            "type": "purchase",
            "customer_id": "cus_friend",
            "order_id": "o-1",
            "amount": "50.00",
            "currency": "usd",
        },
        headers={"Idempotency-Key": "k-1"},
    )
    assert r.status_code == 201, r.text
    purchase = r.json()
    assert purchase["status"] == "attributed" and purchase["is_first_purchase"] is True
    assert purchase["evidence"] == "existing_referral" and purchase["amount"] == "50.00"

    # same key + same body: the first result; same key + other body: 409
    again = await client.post(
        "/v1/conversions",
        json={
            "type": "purchase",
            "customer_id": "cus_friend",
            "order_id": "o-1",
            "amount": "50.00",
            "currency": "usd",
        },
        headers={"Idempotency-Key": "k-1"},
    )
    assert again.status_code == 200 and again.json()["id"] == purchase["id"]
    clash = await client.post(
        "/v1/conversions",
        json={
            "type": "purchase",
            "customer_id": "cus_friend",
            "order_id": "o-1",
            "amount": "51.00",
            "currency": "usd",
        },
        headers={"Idempotency-Key": "k-1"},
    )
    assert clash.status_code == 409
    assert clash.headers["content-type"] == "application/problem+json"

    second = await client.post(
        "/v1/conversions",
        json={
            "type": "purchase",
            "customer_id": "cus_friend",
            "order_id": "o-2",
            "amount": "10",
            "currency": "USD",
        },
    )
    assert second.json()["is_first_purchase"] is False

    records = await read_topic(
        ns.kafka_bootstrap_servers, ns.topic_prefix + "attribution.events", lambda rs: len(rs) >= 4
    )
    events = [CloudEvent.from_json(r.value) for r in records]
    assert sorted(e.type for e in events) == [
        "conversion.attributed.v1",
        "conversion.attributed.v1",
        "conversion.attributed.v1",
        "referral.attributed.v1",
    ]
    assert {r.key for r in records} == {b"adv_1"}


async def test_click_committing_while_its_conversion_is_inserted_is_not_missed(env) -> None:
    """The click consumer's transaction is open (click inserted, nothing pending to resolve yet)
    when the conversion naming that click arrives. Without the evidence lock the conversion would
    read no click, commit as pending after the consumer committed, and wait for the sweeper."""
    client, publish, ns = env.client, env.publish, env.ns
    await _link_facts(publish)
    consumer = await asyncpg.connect(
        ns.database_url, server_settings={"search_path": "attribution"}
    )

    async def copies_in() -> bool:
        return bool(
            await consumer.fetchval(
                "SELECT (SELECT count(*) FROM programs WHERE id = 'prg_1')"
                " + (SELECT count(*) FROM advocates WHERE id = 'adv_1')"
                " + (SELECT count(*) FROM codes WHERE code_key = 'ANN123') = 3"
            )
        )

    await eventually(copies_in, timeout=60)
    payload = ev.LinkClicked(
        click_id=CLICK_ID,
        code="ANN123",
        advocate_id="adv_1",
        program_id="prg_1",
        clicked_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    try:
        tx = consumer.transaction()
        await tx.start()
        await handlers.on_link_clicked(
            consumer, new_event(payload, source="/test", tenant_id="acme"), payload
        )
        request = asyncio.create_task(
            client.post(
                "/v1/conversions",
                json={"type": "signup", "customer_id": "cus_friend", "click_id": CLICK_ID},
            )
        )
        await asyncio.sleep(1.0)
        assert not request.done(), "the conversion must wait for the click's transaction"
        await tx.commit()
        r = await asyncio.wait_for(request, timeout=30)
    finally:
        await consumer.close()
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "attributed" and r.json()["evidence"] == "click"


async def test_self_referral_is_rejected_with_reasons(env) -> None:
    client, publish, ns = env.client, env.publish, env.ns
    await _link_facts(publish)

    async def code_known() -> bool:
        r = await client.post(
            "/v1/conversions",
            json={"type": "signup", "customer_id": "cus_adv", "code": "ann123"},
            headers={"Idempotency-Key": "self-1"},
        )
        return r.status_code in (200, 201) and r.json()["status"] != "pending"

    await eventually(code_known)
    records = await read_topic(
        ns.kafka_bootstrap_servers, ns.topic_prefix + "attribution.events", lambda rs: len(rs) >= 1
    )
    event = CloudEvent.from_json(records[0].value)
    assert event.type == "conversion.rejected.v1"
    assert event.data["reasons"] == ["self_referral"]


async def test_a_friend_from_a_country_the_program_refuses_is_rejected_naming_the_check(
    env,
) -> None:
    client, publish = env.client, env.publish
    await _link_facts(publish)
    await publish(
        "link.events",
        ev.ProgramAudienceChanged(
            program_id="prg_1",
            eligibility={"friends": {"countries_deny": ["FR"]}},
            version=1,
        ),
    )

    async def rule_in() -> bool:
        conn = await asyncpg.connect(env.ns.database_url)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM attribution.programs WHERE friend_countries IS NOT NULL"
                )
            )
        finally:
            await conn.close()

    await eventually(rule_in)

    async def decided(customer: str, country: str) -> dict[str, object] | None:
        r = await client.post(
            "/v1/conversions",
            json={"type": "signup", "customer_id": customer, "code": "ANN123", "country": country},
        )
        body: dict[str, object] = r.json()
        return body if r.status_code in (200, 201) and body["status"] != "pending" else None

    fr = await eventually(lambda: decided("cus_fr", "fr"))
    assert fr["status"] == "rejected" and fr["country"] == "FR"
    checks = fr["explanation"]["checks"]  # type: ignore[index]
    assert {
        "check": "eligibility",
        "outcome": "fail",
        "detail": "friend country FR refused by eligibility.friends.countries_deny",
        "action": "deny",
    } in checks
    de = await eventually(lambda: decided("cus_de", "DE"))
    assert de["status"] == "attributed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount": "1.00",
                "currency": "XYZ",
            },
            "currency",
        ),
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount": "-1.00",
                "currency": "USD",
            },
            "amount",
        ),
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount": 19.990000000001,
                "currency": "USD",
            },
            "amount",
        ),
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount": "59.999",
                "currency": "USD",
            },
            "amount",
        ),
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount_minor": -5,
                "currency": "USD",
            },
            "amount_minor",
        ),
        (
            {
                "type": "purchase",
                "customer_id": "c",
                "order_id": "o",
                "amount": "5",
                "currency": "US",
            },
            "currency",
        ),
        ({"type": "signup", "customer_id": "c", "click_id": "not-a-click"}, "click_id"),
        # well-formed but unknown, for a conversion older than the grace period: not lag
        (
            {
                "type": "signup",
                "customer_id": "c",
                "click_id": "clk_" + "z" * 24,
                "occurred_at": "2026-01-01T00:00:00Z",
            },
            "click_id",
        ),
        (
            {
                "type": "signup",
                "customer_id": "c",
                "code": "NOSUCHCODE",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
            "code",
        ),
        ({"type": "demo_booked", "customer_id": "c"}, "type"),
        ({"type": "signup", "customer_id": "c", "ip": "999.1.1.1"}, "ip"),
        ({"type": "Sign Up", "customer_id": "c"}, "type"),
        ({"type": "signup", "customer_id": ""}, "customer_id"),
        ({"type": "signup", "customer_id": "c", "country": "UK"}, "/country"),
    ],
)
async def test_bad_input_answers_problem_json(env, body, field) -> None:
    client = env.client
    r = await client.post("/v1/conversions", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == pointer(field)


async def test_foreign_tenants_code_and_conversion_are_invisible(env) -> None:
    client, publish, other_key = env.client, env.publish, env.other_key
    await _link_facts(publish)
    r = await client.post("/v1/conversions", json={"type": "signup", "customer_id": "cus_f"})
    assert r.json()["status"] == "organic"
    foreign = {"Authorization": f"Bearer {other_key}"}
    assert (
        await client.get(f"/v1/conversions/{r.json()['id']}", headers=foreign)
    ).status_code == 404

    async def code_refused() -> bool:
        resp = await client.post(
            "/v1/conversions",
            headers=foreign,
            json={"type": "signup", "customer_id": "cus_g", "code": "ANN123"},
        )
        return resp.status_code == 422 and resp.json()["field"] == "/code"

    await eventually(code_refused)


@pytest.mark.parametrize(
    "amount", ["1e999990", "1e999998", "1e-999999999", "1" + "0" * 5000, 1e300]
)
async def test_a_huge_amount_is_refused_in_milliseconds(env, amount) -> None:
    # The review: "1e999990" cost ~24 s of CPU on the event loop, "1e999998" a 500.
    body = {
        "type": "purchase",
        "customer_id": "cus_big",
        "order_id": "ord_big",
        "amount": amount,
        "currency": "USD",
    }
    started = asyncio.get_running_loop().time()
    r = await env.client.post("/v1/conversions", json=body)
    # Wall time on a machine CI shares with the broker and Postgres (0.51 s once under load):
    # the bound only has to tell milliseconds from the ~24 s the unbounded path took.
    assert asyncio.get_running_loop().time() - started < 2.0
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"].lstrip("/") == "amount"


async def test_a_retried_signup_without_order_id_or_key_is_one_conversion(env) -> None:
    # The review: NULL order ids escaped the unique index, so a retried signup was rewarded twice.
    await _link_facts(env.publish)
    signup = {"type": "signup", "customer_id": "cus_retry", "code": "ANN123"}
    first = await env.client.post("/v1/conversions", json=signup)
    assert first.status_code in (201, 202), first.text
    again = await env.client.post("/v1/conversions", json=signup)
    # a later one with another body is still the customer's signup (no 409: there is no key)
    other = await env.client.post("/v1/conversions", json={**signup, "email": "r@example.com"})
    assert (again.status_code, other.status_code) == (200, 200), (again.text, other.text)
    assert again.json()["id"] == other.json()["id"] == first.json()["id"]
    # a signup of another customer is a conversion apart
    apart = await env.client.post("/v1/conversions", json={**signup, "customer_id": "cus_b"})
    assert apart.status_code in (201, 202) and apart.json()["id"] != first.json()["id"]
    records = await read_topic(
        env.ns.kafka_bootstrap_servers,
        env.ns.topic_prefix + "attribution.events",
        lambda rs: sum(b"cus_b" in r.value for r in rs) >= 1,
        timeout=60,
    )
    attributed = [
        e
        for e in (CloudEvent.from_json(r.value) for r in records)
        if e.type == "conversion.attributed.v1" and e.data["friend_customer_id"] == "cus_retry"
    ]
    assert len(attributed) == 1


async def test_a_repeated_order_id_with_another_amount_is_a_conflict(env) -> None:
    client = env.client
    order = {
        "type": "purchase",
        "customer_id": "cus_rep",
        "order_id": "ord_rep",
        "amount": "59.90",
        "currency": "USD",
    }
    first = await client.post("/v1/conversions", json=order)
    assert first.status_code == 201, first.text
    # the same order, the same money: the first conversion, as before
    same = await client.post("/v1/conversions", json={**order, "amount_minor": None})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"], same.text
    for change, field in [({"amount": "60.00"}, "/amount"), ({"currency": "EUR"}, "/currency")]:
        r = await client.post("/v1/conversions", json={**order, **change})
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] == field
        assert r.json()["type"] == "https://referral.dev/problems/conflict"
    # with an Idempotency-Key never seen, the order still names the first conversion
    keyed = await client.post(
        "/v1/conversions", json={**order, "amount": "1.00"}, headers={"Idempotency-Key": "k-rep"}
    )
    assert keyed.status_code == 409 and keyed.json()["field"] == "/amount", keyed.text


async def test_fifty_racing_requests_with_one_idempotency_key_are_one_conversion(env) -> None:
    # The attack suite: 50 at once with one key: one row, one event, the same answer to all.
    await _link_facts(env.publish)
    body = {
        "type": "purchase",
        "customer_id": "cus_race",
        "order_id": "ord_race",
        "amount": "12.50",
        "currency": "USD",
        "code": "ANN123",
    }

    async def known() -> bool:  # the code has reached this service's copy
        probe = {"type": "signup", "customer_id": "cus_probe", "code": "ANN123"}
        r = await env.client.post("/v1/conversions", json=probe)
        return r.status_code in (200, 201) and r.json()["status"] == "attributed"

    await eventually(known)
    answers = await asyncio.gather(
        *(
            env.client.post("/v1/conversions", json=body, headers={"Idempotency-Key": "race-1"})
            for _ in range(50)
        )
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(201) == 1 and statuses.count(200) == 49, [r.text for r in answers]
    first = answers[statuses.index(201)].json()
    differ = {
        k: (first[k], r.json().get(k))
        for r in answers
        for k in first
        if r.json().get(k) != first[k]
    }
    assert not differ, differ
    conn = await asyncpg.connect(
        env.ns.database_url, server_settings={"search_path": "attribution"}
    )
    try:
        rows = await conn.fetchval("SELECT count(*) FROM conversions WHERE order_id = 'ord_race'")
    finally:
        await conn.close()
    assert rows == 1
    records = await read_topic(
        env.ns.kafka_bootstrap_servers,
        env.ns.topic_prefix + "attribution.events",
        lambda rs: sum(b"ord_race" in r.value for r in rs) >= 1,
        timeout=60,
    )
    await asyncio.sleep(1)  # a second event, were there one, would be out by now
    records = await read_topic(
        env.ns.kafka_bootstrap_servers, env.ns.topic_prefix + "attribution.events", None
    )
    assert sum(b"ord_race" in r.value for r in records) == 1

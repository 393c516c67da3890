"""Shopify and Stripe webhooks end to end on real Kafka + Postgres: secrets configured through
the API, valid deliveries become conversions and refunds, and tampered, stale and replayed ones
answer 4xx and change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from attribution_service.commerce import repository as commerce_repository
from devstack.testing import StatementRecorder, eventually, scans_without_index

from .conftest import Env, link_facts

pytestmark = pytest.mark.integration
SHOP = "acme-store.myshopify.com"
SHOP_SECRET = "shpss_" + "s" * 32
STRIPE_SECRET = "whsec_" + "w" * 32


def shopify_order(order_id: int, code: str | None = "ANN123") -> dict[str, Any]:
    """orders/create in the shape of shopify.dev's Order webhook payload (trimmed)."""
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "email": "jon@example.com",
        "created_at": datetime.now(UTC).isoformat(),
        "currency": "USD",
        "current_total_price": "120.00",
        "total_price": "120.00",
        "financial_status": "paid",
        "discount_codes": [{"code": code, "amount": "10.00", "type": "fixed_amount"}]
        if code
        else [],
        "note_attributes": [],
        "customer": {"id": 115310627314723954, "email": "jon@example.com"},
        "line_items": [{"id": 1, "title": "IPod Nano", "price": "130.00", "quantity": 1}],
    }


def shopify_headers(body: bytes, topic: str, **over: str) -> dict[str, str]:
    digest = hmac.new(SHOP_SECRET.encode(), body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
        "X-Shopify-API-Version": "2025-10",
    }
    headers.update(over)
    return headers


def stripe_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2025-10-29.clover",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }


def stripe_headers(
    body: bytes, at: int | None = None, secret: str = STRIPE_SECRET
) -> dict[str, str]:
    t = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Stripe-Signature": f"t={t},v1={sig}"}


async def _count_conversions(env: Env, conv_id: str) -> dict[str, Any]:
    got: dict[str, Any] = (await env.client.get(f"/v1/conversions/{conv_id}")).json()
    return got


async def test_integrations_api_never_returns_secrets(env: Env) -> None:
    r = await env.client.post(
        "/v1/integrations", json={"provider": "shopify", "account": SHOP, "secret": SHOP_SECRET}
    )
    assert r.status_code == 201 and "secret" not in r.json()
    assert r.json()["webhook_path"] == f"/v1/webhooks/shopify/{r.json()['id']}"
    listed = (await env.client.get("/v1/integrations")).json()
    assert [i["id"] for i in listed["items"]] == [r.json()["id"]]
    assert SHOP_SECRET not in json.dumps(listed)
    assert (await env.client.get("/v1/integrations", headers=env.foreign)).json()["items"] == []
    bad = await env.client.post(
        "/v1/integrations", json={"provider": "paypal", "account": "x", "secret": "12345678"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "/provider"
    # Found by the attack suite (schemathesis): a NUL reached Postgres and answered 500.
    nul = await env.client.post(
        "/v1/integrations", json={"provider": "shopify", "account": "s\x002", "secret": "12345678"}
    )
    # (the secret is sealed before it is stored: a NUL there never reaches Postgres)
    assert nul.status_code == 422 and nul.json()["field"] == "/account", nul.text
    gone = await env.client.delete(f"/v1/integrations/{r.json()['id']}", headers=env.foreign)
    assert gone.status_code == 404
    assert (await env.client.delete(f"/v1/integrations/{r.json()['id']}")).status_code == 204


async def test_shopify_orders_and_refunds(env: Env) -> None:
    await link_facts(env.publish)
    integ = (
        await env.client.post(
            "/v1/integrations",
            json={"provider": "shopify", "account": SHOP, "secret": SHOP_SECRET},
        )
    ).json()
    url = integ["webhook_path"]

    # wait until the code is known, so the discount code is recognised as a referral code
    async def code_known() -> bool:
        r = await env.client.post(
            "/v1/conversions",
            # a new customer each time: a customer's signup is one conversion (issue #21)
            json={"type": "signup", "customer_id": f"probe-{uuid.uuid4()}", "code": "ANN123"},
        )
        return r.status_code == 201

    await eventually(code_known)

    body = json.dumps(shopify_order(820982911946154508)).encode()
    headers = shopify_headers(body, "orders/create")
    r = await env.client.post(url, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "conversion" and r.json()["status"] == "attributed"
    conv_id = r.json()["conversion_id"]
    got = await _count_conversions(env, conv_id)
    assert (got["type"], got["order_id"], got["amount"], got["evidence"]) == (
        "purchase",
        "820982911946154508",
        "120.00",
        "code",
    )

    # replayed: the same delivery id again answers its stored outcome (2xx: the platform stops
    # retrying) and changes nothing (issue #21 changed this from 409)
    replay = await env.client.post(url, content=body, headers=headers)
    assert replay.status_code == 200 and replay.json() == r.json()
    # tampered body, wrong secret, stale
    tampered = body.replace(b"120.00", b"999.00")
    r = await env.client.post(url, content=tampered, headers=headers)
    assert r.status_code == 401 and r.json()["field"] == "/X-Shopify-Hmac-Sha256"
    stale = shopify_headers(
        body,
        "orders/create",
        **{"X-Shopify-Triggered-At": (datetime.now(UTC) - timedelta(hours=6)).isoformat()},
    )
    assert (await env.client.post(url, content=body, headers=stale)).status_code == 401
    unknown = await env.client.post(
        "/v1/webhooks/shopify/int_nope",
        content=body,
        headers=shopify_headers(body, "orders/create"),
    )
    assert unknown.status_code == 401
    # a new delivery of the same order (Shopify sends orders/create once per order, but a
    # second subscription would): the same conversion, not a second one
    again = await env.client.post(url, content=body, headers=shopify_headers(body, "orders/create"))
    assert again.status_code == 200 and again.json()["conversion_id"] == conv_id
    assert again.json()["created"] is False

    refund = {
        "id": 509562969,
        "order_id": 820982911946154508,
        "created_at": datetime.now(UTC).isoformat(),
        "note": "damaged",
        "restock": False,
        "refund_line_items": [],
        "transactions": [
            {
                "id": 179259969,
                "order_id": 820982911946154508,
                "kind": "refund",
                "status": "success",
                "amount": "20.00",
                "currency": "USD",
                "gateway": "bogus",
            }
        ],
    }
    rbody = json.dumps(refund).encode()
    r = await env.client.post(url, content=rbody, headers=shopify_headers(rbody, "refunds/create"))
    assert r.status_code == 200 and r.json()["result"] == "refund", r.text
    got = await _count_conversions(env, conv_id)
    assert got["refunded"] == "20.00"

    events = await env.events(
        lambda es: (
            any(e.type == "conversion.refunded.v1" for e in es)
            and len([e for e in es if e.type == "conversion.attributed.v1"]) >= 2
        )
    )
    orders = [
        e
        for e in events
        if e.type == "conversion.attributed.v1" and e.data["conversion_id"] == conv_id
    ]
    assert len(orders) == 1  # the replays produced nothing


async def test_stripe_checkout_invoices_refunds(env: Env) -> None:
    await link_facts(env.publish)
    integ = (
        await env.client.post(
            "/v1/integrations",
            json={"provider": "stripe", "account": "default", "secret": STRIPE_SECRET},
        )
    ).json()
    url = integ["webhook_path"]

    async def code_known() -> bool:
        r = await env.client.post(
            "/v1/conversions",
            # a new customer each time: a customer's signup is one conversion (issue #21)
            json={"type": "signup", "customer_id": f"probe-{uuid.uuid4()}", "code": "ANN123"},
        )
        return r.status_code == 201

    await eventually(code_known)

    session = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_test_a1",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "amount_total": 4999,
            "currency": "usd",
            "customer": "cus_Stripe1",
            "customer_details": {"email": "jenny@example.com", "name": "Jenny"},
            "payment_intent": "pi_3Abc",
            "metadata": {"referral_code": "ANN123"},
            "created": int(time.time()),
        },
    )
    body = json.dumps(session).encode()
    headers = stripe_headers(body)
    r = await env.client.post(url, content=body, headers=headers)
    assert r.status_code == 200, r.text
    conv_id = r.json()["conversion_id"]
    assert r.json()["status"] == "attributed"

    replay = await env.client.post(url, content=body, headers=headers)  # was 409 (issue #21)
    assert replay.status_code == 200 and replay.json() == r.json()
    tampered = body.replace(b"4999", b"9999")
    assert (await env.client.post(url, content=tampered, headers=headers)).status_code == 401
    stale = stripe_headers(body, at=int(time.time()) - 3600)
    r = await env.client.post(url, content=body, headers=stale)
    assert r.status_code == 401 and r.json()["field"] == "/Stripe-Signature"
    wrong = stripe_headers(body, secret="whsec_someone_else")
    assert (await env.client.post(url, content=body, headers=wrong)).status_code == 401

    sub_session = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_test_sub",
            "object": "checkout.session",
            "mode": "subscription",
            "payment_status": "paid",
            "customer": "cus_Stripe2",
            "customer_details": {"email": "sam@example.com"},
            "subscription": "sub_1Sam",
            "metadata": {"referral_code": "ANN123"},
            "created": int(time.time()),
        },
    )
    invoice = stripe_event(
        "invoice.paid",
        {
            "id": "in_1Sam",
            "object": "invoice",
            "customer": "cus_Stripe2",
            "customer_email": "sam@example.com",
            "amount_paid": 1500,
            "currency": "eur",
            "billing_reason": "subscription_create",
            "status_transitions": {"paid_at": int(time.time())},
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_1Sam", "metadata": {}},
            },
        },
    )
    for ev_ in (sub_session, invoice):
        b = json.dumps(ev_).encode()
        r = await env.client.post(url, content=b, headers=stripe_headers(b))
        assert r.status_code == 200, r.text
    paid = await _count_conversions(env, r.json()["conversion_id"])
    assert paid["type"] == "subscription_payment" and paid["status"] == "attributed"
    assert paid["evidence"] == "existing_referral" and paid["amount"] == "15.00"

    charge = stripe_event(
        "charge.refunded",
        {
            "id": "ch_3Abc",
            "object": "charge",
            "amount": 4999,
            "amount_refunded": 999,
            "currency": "usd",
            "payment_intent": "pi_3Abc",
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [{"id": "re_1", "amount": 999, "created": int(time.time())}],
            },
        },
    )
    b = json.dumps(charge).encode()
    r = await env.client.post(url, content=b, headers=stripe_headers(b))
    assert r.status_code == 200 and r.json()["result"] == "refund", r.text
    got = await _count_conversions(env, conv_id)
    assert got["refunded"] == "9.99"

    deleted = stripe_event(
        "customer.subscription.deleted",
        {
            "id": "sub_1Sam",
            "object": "subscription",
            "customer": "cus_Stripe2",
            "ended_at": int(time.time()),
        },
    )
    b = json.dumps(deleted).encode()
    r = await env.client.post(url, content=b, headers=stripe_headers(b))
    assert r.status_code == 200 and r.json()["result"] == "cancelled"
    await env.events(lambda es: any(e.type == "subscription.cancelled.v1" for e in es))


async def test_unprocessable_replayed_and_future_deliveries(env: Env) -> None:
    """The review: a payload we cannot process answered 4xx/500 and a duplicate 409, so the
    platform retried and eventually disabled the subscription. Both answer 2xx now (the
    unprocessable one stored as ignored with its reason); a future-dated delivery is refused."""
    shop = (
        await env.client.post(
            "/v1/integrations",
            json={"provider": "shopify", "account": SHOP, "secret": SHOP_SECRET},
        )
    ).json()["webhook_path"]
    stripe_url = (
        await env.client.post(
            "/v1/integrations",
            json={"provider": "stripe", "account": "default", "secret": STRIPE_SECRET},
        )
    ).json()["webhook_path"]

    huge = {**shopify_order(7001), "current_total_price": "1e999990", "total_price": "1e999990"}
    no_id = {k: v for k, v in shopify_order(7002).items() if k != "id"}
    refund = {
        "id": 99,
        "order_id": 7001,
        "transactions": [{"kind": "refund", "status": "success", "amount": "1e999998"}],
    }
    for topic, payload, reason in [
        ("orders/create", huge, "amount"),
        ("orders/create", no_id, "KeyError"),
        ("refunds/create", refund, "amount"),
        ("orders/create", [1, 2], "not a JSON object"),
    ]:
        body = json.dumps(payload).encode()
        headers = shopify_headers(body, topic)
        r = await env.client.post(shop, content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "ignored" and reason in r.json()["reason"], r.json()
        again = await env.client.post(shop, content=body, headers=headers)
        assert again.status_code == 200 and again.json() == r.json()

    session = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_huge",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "amount_total": 10**30,
            "currency": "usd",
            "customer": "cus_Huge",
        },
    )
    body = json.dumps(session).encode()
    r = await env.client.post(stripe_url, content=body, headers=stripe_headers(body))
    assert r.status_code == 200 and r.json()["result"] == "ignored", r.text
    assert "amount_total" in r.json()["reason"]

    # dated an hour ahead: refused, and nothing stored (a later honest delivery still counts)
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = json.dumps(shopify_order(7003)).encode()
    future = shopify_headers(body, "orders/create", **{"X-Shopify-Triggered-At": ahead})
    r = await env.client.post(shop, content=body, headers=future)
    assert r.status_code == 401 and r.json()["field"] == "/X-Shopify-Triggered-At", r.text
    body = json.dumps({**session, "id": "evt_future"}).encode()
    r = await env.client.post(
        stripe_url, content=body, headers=stripe_headers(body, at=int(time.time()) + 3600)
    )
    assert r.status_code == 401 and r.json()["field"] == "/Stripe-Signature", r.text


async def test_the_receipts_statements_read_through_indexes(env: Env) -> None:
    """A Shopify/Stripe delivery's receipt is taken, read and settled by its key, and the sweeper
    prunes expired ones every 15 s through an index: none reads a whole week of receipts."""
    rec = StatementRecorder()
    conn: Any = rec
    await commerce_repository.insert_receipt(conn, "int_1", "dlv_1", "orders/create")
    await commerce_repository.receipt_outcome(conn, "int_1", "dlv_1")
    await commerce_repository.set_receipt_outcome(conn, "int_1", "dlv_1", {"status": 200})
    await commerce_repository.prune_receipts(conn, datetime.now(UTC) - timedelta(days=7))
    assert len(rec.statements) == 4
    assert await scans_without_index(env.ns.database_url, "attribution", rec.statements) == {}

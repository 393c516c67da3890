"""Shopify and Stripe webhooks as pure functions: signature checks pass on valid deliveries and
refuse tampered and stale ones (replays are refused by the receipt table: see the integration
tests), and payloads shaped like the platforms' documentation map to conversions and refunds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from attribution_service.commerce import domain as commerce
from servicekit.problems import InvalidInput

SECRET = "shpss_0123456789abcdef"
SHOP = "acme-store.myshopify.com"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(hours=5)

# orders/create, trimmed to the fields we read; shape per shopify.dev "Order" webhook payload.
ORDER = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "email": "jon@example.com",
    "created_at": "2026-11-01T07:40:00-05:00",
    "currency": "USD",
    "current_total_price": "398.00",
    "total_price": "398.00",
    "browser_ip": "203.0.113.7",
    "customer_locale": "en-US",
    "discount_codes": [{"code": "WELCOME10", "amount": "10.00", "type": "fixed_amount"}],
    "note_attributes": [
        {"name": "referral_code", "value": "ANN123"},
        {"name": "click_id", "value": "clk_" + "b" * 24},
    ],
    "customer": {"id": 115310627314723954, "email": "jon@example.com"},
}
REFUND = {
    "id": 509562969,
    "order_id": 820982911946154508,
    "created_at": "2026-11-02T10:00:00-05:00",
    "note": "it broke",
    "transactions": [
        {"id": 1, "kind": "refund", "status": "success", "amount": "41.94", "currency": "USD"},
        {"id": 2, "kind": "refund", "status": "failure", "amount": "5.00", "currency": "USD"},
    ],
}


def shopify_headers(body: bytes, secret: str = SECRET, **over: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    h = {
        "x-shopify-hmac-sha256": base64.b64encode(digest).decode(),
        "x-shopify-shop-domain": SHOP,
        "x-shopify-topic": "orders/create",
        "x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "x-shopify-triggered-at": (NOW - timedelta(minutes=1)).isoformat(),
    }
    h.update(over)
    return h


def verify_shopify(body: bytes, headers: dict[str, str]) -> str:
    return commerce.verify_shopify(
        body, headers, secret=SECRET, shop=SHOP, tolerance=TOLERANCE, now=NOW
    )


def test_shopify_valid_delivery_passes() -> None:
    body = json.dumps(ORDER).encode()
    assert verify_shopify(body, shopify_headers(body)) == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b, h: (b.replace(b"398.00", b"1.00"), h),  # body changed after signing
        lambda b, h: (b, shopify_headers(b, secret="another-shops-secret")),
        lambda b, h: (b, {**h, "x-shopify-hmac-sha256": ""}),
        lambda b, h: (b, {**h, "x-shopify-shop-domain": "evil.myshopify.com"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "x-shopify-webhook-id"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "x-shopify-triggered-at"}),
        # stale: triggered longer ago than Shopify's retry span
        lambda b, h: (b, {**h, "x-shopify-triggered-at": (NOW - timedelta(hours=6)).isoformat()}),
    ],
)
def test_shopify_tampered_or_stale_is_refused(tamper) -> None:
    body = json.dumps(ORDER).encode()
    body, headers = tamper(body, shopify_headers(body))
    with pytest.raises(commerce.Unverified):
        verify_shopify(body, headers)


def test_shopify_order_maps_to_a_purchase() -> None:
    action = commerce.shopify_action("orders/create", ORDER)
    assert isinstance(action, commerce.ConversionAction)
    assert action.body == {
        "type": "purchase",
        "customer_id": "115310627314723954",
        "order_id": "820982911946154508",
        "amount": "398.00",
        "currency": "USD",
        "occurred_at": "2026-11-01T07:40:00-05:00",
        "click_id": "clk_" + "b" * 24,
        "email": "jon@example.com",
        "ip": "203.0.113.7",
        "locale": "en-US",
    }
    # discount codes and the note attribute: the handler keeps the first the tenant knows
    assert action.candidate_codes == ["WELCOME10", "ANN123"]


def test_shopify_refund_sums_successful_refund_transactions() -> None:
    action = commerce.shopify_action("refunds/create", REFUND)
    assert isinstance(action, commerce.RefundAction)
    assert action.amount == Decimal("41.94") and action.currency == "USD"
    assert action.order_ids == ["820982911946154508"] and action.refund_id == "shopify:509562969"


def stripe_header(body: bytes, secret: str, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


STRIPE_SECRET = "whsec_test_0123456789"
SESSION_EVENT = {
    "id": "evt_1PqHk2LkdIwHu7ix0QWm0Zxy",
    "object": "event",
    "api_version": "2024-06-20",
    "created": 1762000000,
    "type": "checkout.session.completed",
    "livemode": False,
    "data": {
        "object": {
            "id": "cs_test_a1b2c3",
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "amount_total": 2000,
            "currency": "usd",
            "customer": "cus_Q1w2e3",
            "customer_details": {"email": "jenny@example.com"},
            "payment_intent": "pi_3PqHk2",
            "metadata": {"referral_code": "ANN123"},
            "created": 1762000000,
        }
    },
}


def test_stripe_valid_signature_passes() -> None:
    body = json.dumps(SESSION_EVENT).encode()
    event = commerce.verify_stripe(
        body, stripe_header(body, STRIPE_SECRET), secret=STRIPE_SECRET, tolerance=300
    )
    assert event["id"] == "evt_1PqHk2LkdIwHu7ix0QWm0Zxy"


@pytest.mark.parametrize(
    "case",
    ["tampered", "wrong_secret", "stale", "missing", "garbage"],
)
def test_stripe_tampered_stale_or_missing_signature_is_refused(case) -> None:
    body = json.dumps(SESSION_EVENT).encode()
    header: str | None = stripe_header(body, STRIPE_SECRET)
    if case == "tampered":
        body = body.replace(b"2000", b"9")
    elif case == "wrong_secret":
        header = stripe_header(body, "whsec_other")
    elif case == "stale":
        header = stripe_header(body, STRIPE_SECRET, at=int(time.time()) - 600)
    elif case == "missing":
        header = None
    else:
        header = "t=abc,v1=zz"
    with pytest.raises(commerce.Unverified):
        commerce.verify_stripe(body, header, secret=STRIPE_SECRET, tolerance=300)


def test_stripe_events_map_to_conversions_refunds_and_cancellations() -> None:
    purchase = commerce.stripe_action(SESSION_EVENT)
    assert isinstance(purchase, commerce.ConversionAction)
    assert purchase.body["type"] == "purchase" and purchase.body["order_id"] == "pi_3PqHk2"
    assert purchase.body["amount_minor"] == 2000 and purchase.body["currency"] == "USD"
    assert purchase.candidate_codes == ["ANN123"]

    sub_session = {**SESSION_EVENT["data"]["object"], "mode": "subscription"}  # type: ignore[dict-item]
    signup = commerce.stripe_action(
        {"type": "checkout.session.completed", "data": {"object": sub_session}}
    )
    assert isinstance(signup, commerce.ConversionAction) and signup.body["type"] == "signup"

    invoice = {
        "id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
        "object": "invoice",
        "customer": "cus_Q1w2e3",
        "customer_email": "jenny@example.com",
        "amount_paid": 1500,
        "currency": "eur",
        "billing_reason": "subscription_cycle",
        "status_transitions": {"paid_at": 1762000000},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1MowQV", "metadata": {}},
        },
    }
    paid = commerce.stripe_action({"type": "invoice.paid", "data": {"object": invoice}})
    assert isinstance(paid, commerce.ConversionAction)
    assert paid.body["type"] == "subscription_payment"
    assert paid.body["subscription_id"] == "sub_1MowQV" and paid.body["amount_minor"] == 1500
    trial = commerce.stripe_action(
        {"type": "invoice.paid", "data": {"object": {**invoice, "amount_paid": 0}}}
    )
    assert isinstance(trial, commerce.Ignored)

    charge = {
        "id": "ch_3MmlLrLkdIwHu7ix0snN0B15",
        "object": "charge",
        "amount": 2000,
        "amount_refunded": 500,
        "currency": "usd",
        "payment_intent": "pi_3PqHk2",
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [{"id": "re_1", "amount": 500, "created": 1762000100}],
        },
    }
    refund = commerce.stripe_action({"type": "charge.refunded", "data": {"object": charge}})
    assert isinstance(refund, commerce.RefundAction)
    assert refund.cumulative_minor == 500 and refund.refund_id == "stripe:re_1"
    assert refund.order_ids[0] == "pi_3PqHk2"

    deleted = commerce.stripe_action(
        {
            "type": "customer.subscription.deleted",
            "data": {
                "object": {"id": "sub_1MowQV", "customer": "cus_Q1w2e3", "ended_at": 1762000000}
            },
        }
    )
    assert isinstance(deleted, commerce.CancelAction) and deleted.subscription_id == "sub_1MowQV"


@pytest.mark.parametrize("amount", ["1e999990", "1e999998", "1e-999999999", "12x", None])
def test_shopify_refund_amounts_are_bounded_as_our_api_bounds_them(amount: object) -> None:
    # Decimal(str(...)) summed them unbounded: seconds of CPU, decimal.Overflow or a 500.
    refund = {**REFUND, "transactions": [{**REFUND["transactions"][0], "amount": amount}]}  # type: ignore[dict-item]
    started = time.process_time()
    with pytest.raises(InvalidInput) as refused:
        commerce.shopify_action("refunds/create", refund)
    assert time.process_time() - started < 0.05
    assert refused.value.field == "/amount"


@pytest.mark.parametrize("value", [10**30, -1 - 10**15, "2000", 1e3, True, None])
def test_stripe_integer_amounts_are_bounded_as_amount_minor(value: object) -> None:
    session = {**SESSION_EVENT["data"]["object"], "amount_total": value}  # type: ignore[dict-item]
    with pytest.raises(InvalidInput) as refused:
        commerce.stripe_action({"type": "checkout.session.completed", "data": {"object": session}})
    assert refused.value.field == "/amount_total"
    charge = {"id": "ch_1", "amount_refunded": value, "currency": "usd", "payment_intent": "pi_1"}
    with pytest.raises(InvalidInput) as refused:
        commerce.stripe_action({"type": "charge.refunded", "data": {"object": charge}})
    assert refused.value.field == "/amount_refunded"

"""Shopify and Stripe webhooks as pure functions: verify a delivery, then map the platform's
payload (in the shapes of their public documentation) to what our own API would receive. No I/O
here; commerce.handlers applies the result in one transaction with the delivery's receipt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Literal

import stripe

from servicekit import money
from servicekit.problems import DomainError, InvalidInput, register_type

CLICK_ID = re.compile(r"^clk_[a-z0-9]{16,64}$")
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")
# Note/metadata keys a storefront may use to carry our evidence.
CODE_KEYS = ("referral_code", "ref_code", "ref")
CLICK_KEYS = ("click_id", "referral_click_id", "ref_click")


class Unverified(DomainError):
    status = 401
    title = "Webhook not verified"
    type = register_type("webhook-unverified", 401, "Webhook not verified")


# How far ahead of our clock a delivery's signed timestamp may be (clock skew): beyond it the
# delivery is refused, since a future-dated one would outlive every replay window.
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class ConversionAction:
    body: dict[str, Any]
    # Codes found on the order; only those the tenant knows are referral codes (a discount code
    # is usually just a discount).
    candidate_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RefundAction:
    order_ids: list[str]
    refund_id: str
    refunded_at: datetime
    currency: str
    amount: Decimal | None = None
    # Stripe reports the cumulative amount refunded on a charge; this refund is the increase.
    cumulative_minor: int | None = None


@dataclass(frozen=True)
class CancelAction:
    subscription_id: str
    customer_id: str | None
    cancelled_at: datetime


@dataclass(frozen=True)
class Ignored:
    reason: str


Action = ConversionAction | RefundAction | CancelAction | Ignored


# --- Shopify -------------------------------------------------------------------------------


def verify_shopify(
    body: bytes,
    headers: dict[str, str],
    *,
    secret: str,
    shop: str,
    tolerance: timedelta,
    now: datetime,
) -> str:
    """Returns the delivery's webhook id. X-Shopify-Hmac-Sha256 is the base64 HMAC-SHA256 of the
    raw body with the shop's secret, compared in constant time."""
    given = headers.get("x-shopify-hmac-sha256", "")
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unverified(
            "X-Shopify-Hmac-Sha256 does not match the body", field="/X-Shopify-Hmac-Sha256"
        )
    if headers.get("x-shopify-shop-domain", "").lower() != shop.lower():
        raise Unverified(
            "X-Shopify-Shop-Domain is not this integration's shop", field="/X-Shopify-Shop-Domain"
        )
    webhook_id = headers.get("x-shopify-webhook-id", "")
    if not webhook_id:
        raise Unverified("X-Shopify-Webhook-Id is missing", field="/X-Shopify-Webhook-Id")
    # Required (Shopify sends it on every delivery): without it a replay older than our receipt
    # retention could not be told from a new delivery.
    triggered = headers.get("x-shopify-triggered-at", "")
    try:
        at = datetime.fromisoformat(triggered.replace("Z", "+00:00"))
    except ValueError:
        raise Unverified(
            "X-Shopify-Triggered-At is missing or not a timestamp", field="/X-Shopify-Triggered-At"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if now - at > tolerance:
        raise Unverified(
            "the delivery is older than the tolerance", field="/X-Shopify-Triggered-At"
        )
    if at - now > FUTURE_SKEW:
        raise Unverified("the delivery is dated in the future", field="/X-Shopify-Triggered-At")
    return webhook_id


def _attributes(order: dict[str, Any]) -> dict[str, str]:
    attrs = order.get("note_attributes") or []
    return {
        str(a.get("name", "")).lower(): str(a.get("value", ""))
        for a in attrs
        if isinstance(a, dict)
    }


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def unprocessable(exc: Exception) -> Ignored:
    """A verified delivery we cannot use: stored as ignored with the reason and answered 2xx,
    so the platform neither retries it forever nor disables the subscription."""
    if isinstance(exc, DomainError):
        where = f"{exc.field}: " if exc.field else ""
        return Ignored(f"unprocessable payload: {where}{exc.detail}"[:500])
    return Ignored(f"unprocessable payload: {type(exc).__name__}: {str(exc)[:200]}")


# What mapping a payload of an unexpected shape raises (a missing key, a list for an object, a
# bad number or timestamp, an amount out of bounds).
PAYLOAD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, DomainError)


def shopify_delivery(topic: str, body: bytes) -> Action:
    """A verified Shopify body as the action it asks for, or Ignored saying why not."""
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            return Ignored("unprocessable payload: the body is not a JSON object")
        return shopify_action(topic, payload)
    except PAYLOAD_ERRORS as exc:
        return unprocessable(exc)


def shopify_action(topic: str, payload: dict[str, Any]) -> Action:
    if topic == "orders/create":
        return _shopify_order(payload)
    if topic == "refunds/create":
        return _shopify_refund(payload)
    return Ignored(f"topic {topic} is not handled")


def _shopify_order(order: dict[str, Any]) -> Action:
    customer = order.get("customer") or {}
    email = order.get("email") or order.get("contact_email") or customer.get("email")
    customer_id = (
        str(customer["id"]) if customer.get("id") else (f"email:{email.lower()}" if email else None)
    )
    if customer_id is None:
        return Ignored("the order names no customer")
    attrs = _attributes(order)
    codes = [
        str(d.get("code", "")) for d in order.get("discount_codes") or [] if isinstance(d, dict)
    ]
    codes += [attrs[k] for k in CODE_KEYS if k in attrs]
    click = next((attrs[k] for k in CLICK_KEYS if k in attrs and CLICK_ID.match(attrs[k])), None)
    body: dict[str, Any] = {
        "type": "purchase",
        "customer_id": customer_id,
        "order_id": str(order["id"]),
        "amount": str(order.get("current_total_price") or order.get("total_price") or "0"),
        "currency": order.get("currency") or order.get("presentment_currency"),
        "occurred_at": order.get("created_at") or order.get("processed_at"),
        "click_id": click,
    }
    if email:
        body["email"] = email
    if order.get("browser_ip"):
        body["ip"] = order["browser_ip"]
    if order.get("customer_locale"):
        body["locale"] = order["customer_locale"]
    return ConversionAction(body, [c for c in codes if CODE.match(c)])


def _shopify_refund(refund: dict[str, Any]) -> Action:
    txs = [
        t
        for t in refund.get("transactions") or []
        if t.get("kind") == "refund" and t.get("status") == "success"
    ]
    if not txs:
        return Ignored("the refund moved no money")
    # Each amount bounded as our API bounds one (servicekit.money.parse); the sum is then exact.
    with localcontext(prec=80):
        amount = sum((money.parse(t.get("amount"), "/amount") for t in txs), Decimal(0))
    return RefundAction(
        order_ids=[str(refund["order_id"])],
        refund_id=f"shopify:{refund['id']}",
        refunded_at=_ts(refund.get("created_at") or refund.get("processed_at"))
        or datetime.now(UTC),
        currency=str(txs[0].get("currency") or ""),
        amount=amount,
    )


# --- Stripe --------------------------------------------------------------------------------


def verify_stripe(
    body: bytes,
    signature: str | None,
    *,
    secret: str,
    tolerance: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Stripe's own verification (HMAC-SHA256 of "<t>.<body>", any v1 signature, timestamp
    within `tolerance` seconds, and not dated in the future); returns the parsed event."""
    now = now or datetime.now(UTC)
    try:
        event = stripe.Webhook.construct_event(body, signature, secret, tolerance=tolerance)
    except stripe.SignatureVerificationError as exc:
        raise Unverified(
            f"Stripe-Signature: {exc.user_message or exc}", field="/Stripe-Signature"
        ) from None
    except ValueError:
        raise Unverified("the body is not a Stripe event") from None
    signed_at = _stripe_timestamp(signature)
    if signed_at is not None and signed_at - now > FUTURE_SKEW:
        raise Unverified("the delivery is dated in the future", field="/Stripe-Signature")
    data: dict[str, Any] = event.to_dict()
    return data


def _stripe_timestamp(signature: str | None) -> datetime | None:
    # "t=<unix seconds>,v1=<hex>,...": Stripe's own check bounds only its age.
    for part in (signature or "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "t" and value.strip().isdigit():
            return datetime.fromtimestamp(int(value.strip()), UTC)
    return None


def _meta(*objs: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in objs:
        if isinstance(o, dict):
            out.update({str(k).lower(): str(v) for k, v in o.items()})
    return out


def _evidence(meta: dict[str, str]) -> tuple[list[str], str | None]:
    codes = [meta[k] for k in CODE_KEYS if k in meta and CODE.match(meta[k])]
    click = next((meta[k] for k in CLICK_KEYS if k in meta and CLICK_ID.match(meta[k])), None)
    return codes, click


def stripe_delivery(event: dict[str, Any]) -> Action:
    """A verified Stripe event as the action it asks for, or Ignored saying why not."""
    try:
        return stripe_action(event)
    except PAYLOAD_ERRORS as exc:
        return unprocessable(exc)


def stripe_action(event: dict[str, Any]) -> Action:
    obj: dict[str, Any] = event.get("data", {}).get("object", {})
    kind = event.get("type")
    if kind == "checkout.session.completed":
        return _stripe_session(obj)
    if kind == "invoice.paid":
        return _stripe_invoice(obj)
    if kind == "charge.refunded":
        return _stripe_refund(obj)
    if kind == "customer.subscription.deleted":
        return CancelAction(
            subscription_id=str(obj["id"]),
            customer_id=obj.get("customer"),
            cancelled_at=_ts(obj.get("ended_at") or obj.get("canceled_at")) or datetime.now(UTC),
        )
    return Ignored(f"event type {kind} is not handled")


def _customer(obj: dict[str, Any], email: str | None) -> str | None:
    cus = obj.get("customer")
    if isinstance(cus, dict):
        cus = cus.get("id")
    if cus:
        return str(cus)
    return f"email:{email.lower()}" if email else None


def _minor(value: Any, field: str) -> int:
    """Stripe's integer amounts, bounded as our API bounds `amount_minor` (money.check_minor)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{field[1:]} is not an integer amount", field=field)
    return money.check_minor(value, field)


def _stripe_session(s: dict[str, Any]) -> Action:
    email = (s.get("customer_details") or {}).get("email") or s.get("customer_email")
    customer_id = _customer(s, email)
    if customer_id is None:
        return Ignored("the session names no customer")
    codes, click = _evidence(_meta(s.get("metadata")))
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "click_id": click,
        "email": email,
        "occurred_at": _ts(s.get("created")),
    }
    if s.get("mode") == "subscription":
        # The first invoice.paid carries the money; the session makes the friend's referral,
        # so that payment (and the next ones) attribute through it.
        body.update(type="signup", order_id=str(s["id"]))
    elif s.get("payment_status") == "paid":
        body.update(
            type="purchase",
            order_id=str(s.get("payment_intent") or s["id"]),
            amount_minor=_minor(s.get("amount_total"), "/amount_total"),
            currency=str(s["currency"]).upper(),
        )
    else:
        return Ignored("the session is not paid yet")
    return ConversionAction({k: v for k, v in body.items() if v is not None}, codes)


def _stripe_invoice(inv: dict[str, Any]) -> Action:
    if not inv.get("amount_paid"):
        return Ignored("nothing was paid (trial or zero invoice)")
    parent = (inv.get("parent") or {}).get("subscription_details") or {}
    sub = inv.get("subscription") or parent.get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    email = inv.get("customer_email")
    customer_id = _customer(inv, email)
    if customer_id is None:
        return Ignored("the invoice names no customer")
    codes, click = _evidence(
        _meta(
            parent.get("metadata"),
            (inv.get("subscription_details") or {}).get("metadata"),
            inv.get("metadata"),
        )
    )
    paid_at = (inv.get("status_transitions") or {}).get("paid_at") or inv.get("created")
    body: dict[str, Any] = {
        "type": "subscription_payment" if sub else "purchase",
        "customer_id": customer_id,
        "order_id": str(inv["id"]),
        "subscription_id": str(sub) if sub else None,
        "amount_minor": _minor(inv.get("amount_paid"), "/amount_paid"),
        "currency": str(inv["currency"]).upper(),
        "occurred_at": _ts(paid_at),
        "email": email,
        "click_id": click,
    }
    return ConversionAction({k: v for k, v in body.items() if v is not None}, codes)


def _stripe_refund(ch: dict[str, Any]) -> Action:
    refunds = (ch.get("refunds") or {}).get("data") or []
    latest = max(refunds, key=lambda r: r.get("created", 0)) if refunds else None
    order_ids = [str(x) for x in (ch.get("payment_intent"), ch.get("invoice"), ch.get("id")) if x]
    return RefundAction(
        order_ids=order_ids,
        # One charge.refunded per refund; the cumulative total also names it when the refund
        # list is not expanded (newer API versions).
        refund_id=f"stripe:{latest['id']}"
        if latest
        else f"stripe:{ch['id']}@{ch['amount_refunded']}",
        refunded_at=_ts(latest.get("created") if latest else None) or datetime.now(UTC),
        currency=str(ch["currency"]).upper(),
        cumulative_minor=_minor(ch.get("amount_refunded"), "/amount_refunded"),
    )


Provider = Literal["shopify", "stripe"]

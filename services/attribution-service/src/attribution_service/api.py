"""HTTP routes: authenticate, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from attribution_service import commerce, handlers, integrations
from attribution_service.config import Settings
from attribution_service.conversion_batch import ConversionWriter
from attribution_service.domain import ProgramSettings
from attribution_service.schemas import (
    CancellationIn,
    CancellationOut,
    ConversionIn,
    ConversionOut,
    IntegrationIn,
    IntegrationOut,
    RefundIn,
    RefundOut,
    ReviewDecisionIn,
    ReviewOut,
    ReviewPage,
    SettingsOut,
)
from servicekit import money
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime

router = APIRouter()


# servicekit's `runtime` is a plain function, which FastAPI runs in its thread pool: two
# thread hand-offs per request, a large share of a conversion's CPU on a busy machine. It is a
# dict lookup, so it runs on the event loop here.
async def _runtime(request: Request) -> Runtime:
    return runtime(request)


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(_runtime)]
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200)]


def _settings(rt: Runtime) -> Settings:
    s = rt.settings
    assert isinstance(s, Settings)
    return s


def _writer(rt: Runtime) -> ConversionWriter | None:
    return next((w for w in rt.workers if isinstance(w, ConversionWriter)), None)


def _fmt(minor: int | None, currency: str | None) -> str | None:
    return money.format_minor(minor, currency) if minor is not None and currency else None


def _refund_out(r: asyncpg.Record) -> RefundOut:
    return RefundOut(
        id=r["id"],
        refund_id=r["external_id"],
        amount=money.format_minor(r["amount_minor"], r["currency"]),
        amount_minor=r["amount_minor"],
        currency=r["currency"],
        refunded_total=money.format_minor(r["total_minor"], r["currency"]),
        full=r["full_refund"],
        refunded_at=r["refunded_at"],
    )


def _out(row: Mapping[str, Any], refunds: list[asyncpg.Record] | None = None) -> ConversionOut:
    return ConversionOut(
        id=row["id"],
        type=row["type"],
        customer_id=row["customer_id"],
        status=row["status"],
        decision=row["decision"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        referral_id=row["referral_id"],
        evidence=row["evidence"],
        is_first_purchase=row["is_first_purchase"],
        sequence=row["sequence"],
        order_id=row["order_id"],
        subscription_id=row["subscription_id"],
        amount=_fmt(row["amount_minor"], row["currency"]),
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        refunded=_fmt(row["refunded_minor"], row["currency"]),
        occurred_at=row["occurred_at"],
        decided_at=row["decided_at"],
        explanation=row["explanation"],
        refunds=[_refund_out(r) for r in refunds or []],
    )


# --- conversions ---------------------------------------------------------------------------


@router.post(
    "/v1/conversions",
    status_code=201,
    response_model=ConversionOut,
    tags=["conversions"],
    responses={
        200: {"description": "the same conversion, already recorded"},
        202: {"description": "accepted; waiting for the click or code it names"},
    },
)
async def submit_conversion(
    body: ConversionIn,
    who: Auth,
    rt: Rt,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ConversionOut:
    out, response.status_code = await submit(rt, who, body, idempotency_key)
    return out


async def submit(
    rt: Runtime, who: Principal, body: ConversionIn, idempotency_key: str | None
) -> tuple[ConversionOut, int]:
    """The conversion and its status code (also the hot path's, see front.py)."""
    s = _settings(rt)
    new = handlers.prepare_conversion(
        who.tenant_id, body, idempotency_key, hash_key=s.ip_hash_key, now=datetime.now(UTC)
    )
    writer = _writer(rt)
    if writer is not None and writer.accepting:
        # group commit: decided with the requests queued beside it, in one transaction
        row, created = await writer.submit(new)
    else:
        async with rt.transaction() as conn:
            row, created = await handlers.submit_prepared(
                conn, new, grace=timedelta(seconds=s.evidence_grace_seconds)
            )
    if not created:
        return _out(row), 200
    return _out(row), 202 if row["status"] == "pending" else 201


@router.get("/v1/conversions/{conversion_id}", response_model=ConversionOut, tags=["conversions"])
async def get_conversion(conversion_id: str, who: Auth, rt: Rt) -> ConversionOut:
    async with rt.transaction() as conn:
        row, refunds = await handlers.get_conversion(conn, who.tenant_id, conversion_id)
    return _out(row, refunds)


@router.post(
    "/v1/conversions/{conversion_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    tags=["conversions"],
    responses={200: {"description": "the same refund, already recorded"}},
)
async def refund_conversion(
    conversion_id: str,
    body: RefundIn,
    who: Auth,
    rt: Rt,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RefundOut:
    async with rt.transaction() as conn:
        row, created = await handlers.refund(
            conn, who.tenant_id, conversion_id, body, idempotency_key
        )
    if not created:
        response.status_code = 200
    return _refund_out(row)


@router.post(
    "/v1/subscriptions/{subscription_id}/cancellation",
    status_code=201,
    response_model=CancellationOut,
    tags=["conversions"],
    responses={200: {"description": "already cancelled"}},
)
async def cancel_subscription(
    subscription_id: str,
    body: CancellationIn,
    who: Auth,
    rt: Rt,
    response: Response,
) -> CancellationOut:
    async with rt.transaction() as conn:
        row, latest, created = await handlers.cancel_subscription(
            conn, who.tenant_id, subscription_id, body
        )
    if not created:
        response.status_code = 200
    return CancellationOut(
        subscription_id=row["subscription_id"],
        customer_id=row["customer_id"],
        cancelled_at=row["cancelled_at"],
        advocate_id=latest["advocate_id"] if latest else None,
        program_id=latest["program_id"] if latest else None,
    )


# --- program settings ----------------------------------------------------------------------


@router.get(
    "/v1/programs/{program_id}/attribution-settings", response_model=SettingsOut, tags=["settings"]
)
async def get_settings(program_id: str, who: Auth, rt: Rt) -> SettingsOut:
    async with rt.transaction() as conn:
        settings, updated = await handlers.get_settings(conn, who.tenant_id, program_id)
    return SettingsOut(program_id=program_id, settings=settings, updated_at=updated)


@router.put(
    "/v1/programs/{program_id}/attribution-settings", response_model=SettingsOut, tags=["settings"]
)
async def put_settings(program_id: str, body: ProgramSettings, who: Auth, rt: Rt) -> SettingsOut:
    async with rt.transaction() as conn:
        updated = await handlers.put_settings(conn, who.tenant_id, program_id, body)
    return SettingsOut(program_id=program_id, settings=body, updated_at=updated)


# --- reviews -------------------------------------------------------------------------------


def _review(r: asyncpg.Record) -> ReviewOut:
    return ReviewOut(
        id=r["id"],
        conversion_id=r["conversion_id"],
        program_id=r["program_id"],
        advocate_id=r["advocate_id"],
        reasons=list(r["reasons"]),
        status=r["status"],
        decision_reason=r["decision_reason"],
        decided_by=r["decided_by"],
        created_at=r["created_at"],
        decided_at=r["decided_at"],
    )


@router.get("/v1/reviews", response_model=ReviewPage, tags=["reviews"])
async def list_reviews(
    who: Auth,
    rt: Rt,
    status: Literal["open", "approved", "denied"] = "open",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=100)] = None,
) -> ReviewPage:
    async with rt.transaction() as conn:
        rows = await handlers.list_reviews(conn, who.tenant_id, status, limit, after)
    items = [_review(r) for r in rows]
    return ReviewPage(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/v1/reviews/{review_id}", response_model=ReviewOut, tags=["reviews"])
async def get_review(review_id: str, who: Auth, rt: Rt) -> ReviewOut:
    async with rt.transaction() as conn:
        return _review(await handlers.get_review(conn, who.tenant_id, review_id))


@router.post("/v1/reviews/{review_id}/approve", response_model=ReviewOut, tags=["reviews"])
async def approve_review(review_id: str, body: ReviewDecisionIn, who: Auth, rt: Rt) -> ReviewOut:
    async with rt.transaction() as conn:
        row = await handlers.decide_review(
            conn,
            who.tenant_id,
            review_id,
            approve=True,
            reason=body.reason,
            decided_by=body.decided_by,
        )
    return _review(row)


@router.post("/v1/reviews/{review_id}/deny", response_model=ReviewOut, tags=["reviews"])
async def deny_review(review_id: str, body: ReviewDecisionIn, who: Auth, rt: Rt) -> ReviewOut:
    async with rt.transaction() as conn:
        row = await handlers.decide_review(
            conn,
            who.tenant_id,
            review_id,
            approve=False,
            reason=body.reason,
            decided_by=body.decided_by,
        )
    return _review(row)


# --- commerce integrations -----------------------------------------------------------------


def _integration(r: asyncpg.Record) -> IntegrationOut:
    return IntegrationOut(
        id=r["id"],
        provider=r["provider"],
        account=r["account"],
        webhook_path=f"/v1/webhooks/{r['provider']}/{r['id']}",
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


@router.post(
    "/v1/integrations", status_code=201, response_model=IntegrationOut, tags=["integrations"]
)
async def configure_integration(body: IntegrationIn, who: Auth, rt: Rt) -> IntegrationOut:
    """Store (or rotate) a platform's webhook secret; the secret is never returned."""
    async with rt.transaction() as conn:
        row = await integrations.configure(
            conn, who.tenant_id, body.provider, body.account, body.secret
        )
    return _integration(row)


@router.get("/v1/integrations", response_model=list[IntegrationOut], tags=["integrations"])
async def list_integrations(who: Auth, rt: Rt) -> list[IntegrationOut]:
    async with rt.transaction() as conn:
        return [_integration(r) for r in await integrations.listing(conn, who.tenant_id)]


@router.delete("/v1/integrations/{integration_id}", status_code=204, tags=["integrations"])
async def delete_integration(integration_id: str, who: Auth, rt: Rt) -> Response:
    async with rt.transaction() as conn:
        await integrations.remove(conn, who.tenant_id, integration_id)
    return Response(status_code=204)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise commerce.Unverified("the body is not JSON", field="body") from None
    if not isinstance(data, dict):
        raise commerce.Unverified("the body is not a JSON object", field="body")
    return data


@router.post("/v1/webhooks/shopify/{integration_id}", tags=["integrations"])
async def shopify_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """orders/create and refunds/create. Verified against the shop's secret; a replayed
    delivery (same X-Shopify-Webhook-Id) answers 409 and changes nothing."""
    s = _settings(rt)
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    now = datetime.now(UTC)
    async with rt.transaction() as conn:
        integ = await integrations.integration(conn, "shopify", integration_id)
        webhook_id = commerce.verify_shopify(
            body,
            headers,
            secret=integ["secret"],
            shop=integ["account"],
            tolerance=timedelta(seconds=s.shopify_webhook_tolerance_seconds),
            now=now,
        )
        topic = headers.get("x-shopify-topic", "")
        action = commerce.shopify_action(topic, _json(body))
        return await integrations.apply(
            conn,
            integ,
            webhook_id,
            topic,
            action,
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hash_key,
            now=now,
        )


@router.post("/v1/webhooks/stripe/{integration_id}", tags=["integrations"])
async def stripe_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """checkout.session.completed, invoice.paid, charge.refunded (and
    customer.subscription.deleted). Verified with the Stripe-Signature scheme; a replayed event
    id answers 409 and changes nothing."""
    s = _settings(rt)
    body = await request.body()
    async with rt.transaction() as conn:
        integ = await integrations.integration(conn, "stripe", integration_id)
        event = commerce.verify_stripe(
            body,
            request.headers.get("stripe-signature"),
            secret=integ["secret"],
            tolerance=s.stripe_webhook_tolerance_seconds,
        )
        return await integrations.apply(
            conn,
            integ,
            str(event["id"]),
            str(event.get("type")),
            commerce.stripe_action(event),
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hash_key,
            now=datetime.now(UTC),
        )

"""HTTP routes of the commerce integrations: per-tenant webhook secrets, and the Shopify and
Stripe webhooks themselves (authenticated by their signatures, not by an API key)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response

from attribution_service.commerce import domain as commerce
from attribution_service.commerce import handlers
from attribution_service.commerce.schemas import IntegrationIn, IntegrationOut
from attribution_service.web import Auth, Rt, settings

router = APIRouter(tags=["integrations"])


def _integration(r: asyncpg.Record) -> IntegrationOut:
    return IntegrationOut(
        id=r["id"],
        provider=r["provider"],
        account=r["account"],
        webhook_path=f"/v1/webhooks/{r['provider']}/{r['id']}",
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


@router.post("/v1/integrations", status_code=201, response_model=IntegrationOut)
async def configure_integration(body: IntegrationIn, who: Auth, rt: Rt) -> IntegrationOut:
    """Store (or rotate) a platform's webhook secret; the secret is never returned."""
    async with rt.transaction() as conn:
        row = await handlers.configure(
            conn, who.tenant_id, body.provider, body.account, body.secret
        )
    return _integration(row)


@router.get("/v1/integrations", response_model=list[IntegrationOut])
async def list_integrations(who: Auth, rt: Rt) -> list[IntegrationOut]:
    async with rt.transaction() as conn:
        return [_integration(r) for r in await handlers.listing(conn, who.tenant_id)]


@router.delete("/v1/integrations/{integration_id}", status_code=204)
async def delete_integration(integration_id: str, who: Auth, rt: Rt) -> Response:
    async with rt.transaction() as conn:
        await handlers.remove(conn, who.tenant_id, integration_id)
    return Response(status_code=204)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise commerce.Unverified("the body is not JSON", field="body") from None
    if not isinstance(data, dict):
        raise commerce.Unverified("the body is not a JSON object", field="body")
    return data


@router.post("/v1/webhooks/shopify/{integration_id}")
async def shopify_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """orders/create and refunds/create. Verified against the shop's secret; a replayed
    delivery (same X-Shopify-Webhook-Id) answers 409 and changes nothing."""
    s = settings(rt)
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    now = datetime.now(UTC)
    async with rt.transaction() as conn:
        integ = await handlers.integration(conn, "shopify", integration_id)
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
        return await handlers.apply(
            conn,
            integ,
            webhook_id,
            topic,
            action,
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hash_key,
            now=now,
        )


@router.post("/v1/webhooks/stripe/{integration_id}")
async def stripe_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """checkout.session.completed, invoice.paid, charge.refunded (and
    customer.subscription.deleted). Verified with the Stripe-Signature scheme; a replayed event
    id answers 409 and changes nothing."""
    s = settings(rt)
    body = await request.body()
    async with rt.transaction() as conn:
        integ = await handlers.integration(conn, "stripe", integration_id)
        event = commerce.verify_stripe(
            body,
            request.headers.get("stripe-signature"),
            secret=integ["secret"],
            tolerance=s.stripe_webhook_tolerance_seconds,
        )
        return await handlers.apply(
            conn,
            integ,
            str(event["id"]),
            str(event.get("type")),
            commerce.stripe_action(event),
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hash_key,
            now=datetime.now(UTC),
        )

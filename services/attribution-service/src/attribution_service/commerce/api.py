"""HTTP routes of the commerce integrations: per-tenant webhook secrets, and the Shopify and
Stripe webhooks themselves (authenticated by their signatures, not by an API key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Request, Response

from attribution_service.commerce import domain as commerce
from attribution_service.commerce import handlers
from attribution_service.commerce.schemas import IntegrationIn, IntegrationOut
from attribution_service.commerce.secrets import IntegrationCache
from attribution_service.web import Auth, Rt, settings
from servicekit.auth import public, requires
from servicekit.pagination import Page, PageParams

router = APIRouter(tags=["integrations"])


def _cache(request: Request, rt: Rt) -> IntegrationCache:
    cache: IntegrationCache | None = getattr(request.app.state, "integrations", None)
    if cache is None:
        s = settings(rt)
        cache = IntegrationCache(s.integration_cache_seconds, s.secret_box())
        request.app.state.integrations = cache
    return cache


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
    "/v1/integrations",
    dependencies=[requires("webhooks:admin")],
    status_code=201,
    response_model=IntegrationOut,
)
async def configure_integration(
    body: IntegrationIn, who: Auth, rt: Rt, request: Request
) -> IntegrationOut:
    """Store (or rotate) a platform's webhook secret; the secret is never returned."""
    async with rt.transaction() as conn:
        row = await handlers.configure(
            conn, who.tenant_id, body.provider, body.account, body.secret, settings(rt).secret_box()
        )
    _cache(request, rt).forget()
    return _integration(row)


@router.get(
    "/v1/integrations",
    dependencies=[requires("webhooks:admin")],
    response_model=Page[IntegrationOut],
)
async def list_integrations(
    who: Auth,
    rt: Rt,
    page: PageParams,
    provider: Literal["shopify", "stripe"] | None = None,
) -> Page[IntegrationOut]:
    async with rt.transaction() as conn:
        rows = await handlers.integration_page(conn, who.tenant_id, provider, page)
    return page.answer(rows, _integration)


@router.delete(
    "/v1/integrations/{integration_id}", dependencies=[requires("webhooks:admin")], status_code=204
)
async def delete_integration(integration_id: str, who: Auth, rt: Rt, request: Request) -> Response:
    async with rt.transaction() as conn:
        await handlers.remove(conn, who.tenant_id, integration_id)
    _cache(request, rt).forget()
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/shopify/{integration_id}",
    dependencies=[public("Shopify signs it (HMAC, the integration's secret)")],
)
async def shopify_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """orders/create and refunds/create. Verified against the shop's secret; a replayed
    delivery (same X-Shopify-Webhook-Id) answers its stored outcome and changes nothing."""
    s = settings(rt)
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    now = datetime.now(UTC)
    # Verified against the cached secret before a connection is taken.
    integ = await _cache(request, rt).get(rt, "shopify", integration_id)
    webhook_id = commerce.verify_shopify(
        body,
        headers,
        secret=integ["secret"],
        shop=integ["account"],
        tolerance=timedelta(seconds=s.shopify_webhook_tolerance_seconds),
        now=now,
    )
    topic = headers.get("x-shopify-topic", "")
    action = commerce.shopify_delivery(topic, body)
    async with rt.transaction() as conn:
        return await handlers.apply(
            conn,
            integ,
            webhook_id,
            topic,
            action,
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hasher(),
            now=now,
        )


@router.post(
    "/v1/webhooks/stripe/{integration_id}",
    dependencies=[public("Stripe signs it (HMAC, the integration's secret)")],
)
async def stripe_webhook(integration_id: str, request: Request, rt: Rt) -> dict[str, Any]:
    """checkout.session.completed, invoice.paid, charge.refunded (and
    customer.subscription.deleted). Verified with the Stripe-Signature scheme; a replayed event
    id answers its stored outcome and changes nothing."""
    s = settings(rt)
    body = await request.body()
    integ = await _cache(request, rt).get(rt, "stripe", integration_id)
    event = commerce.verify_stripe(
        body,
        request.headers.get("stripe-signature"),
        secret=integ["secret"],
        tolerance=s.stripe_webhook_tolerance_seconds,
    )
    async with rt.transaction() as conn:
        return await handlers.apply(
            conn,
            integ,
            str(event["id"]),
            str(event.get("type")),
            commerce.stripe_delivery(event),
            grace=timedelta(seconds=s.evidence_grace_seconds),
            hash_key=s.ip_hasher(),
            now=datetime.now(UTC),
        )

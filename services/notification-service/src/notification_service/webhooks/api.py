"""HTTP routes of webhooks: authenticate, vet, open the transaction, call a handler, shape the
answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request

from notification_service.web import AppClock, Auth, Cfg, Rt, settings_of
from notification_service.webhooks import handlers, urlguard
from notification_service.webhooks.domain import DeliveryStatus
from notification_service.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreated,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    ReplayIn,
    ReplayOut,
    SecretRotated,
)
from servicekit.auth import requires
from servicekit.pagination import NEWEST, CreatedParams, Page, PageParams

router = APIRouter(tags=["webhooks"])


def url_policy(request: Request) -> urlguard.UrlPolicy:
    """FastAPI dependency: the SSRF guard as configured, with the app's resolver."""
    settings = settings_of(request)
    resolver: urlguard.Resolver = getattr(
        request.app.state, "url_resolver", urlguard.system_resolver
    )
    return urlguard.UrlPolicy(
        allow_http=settings.webhook_allow_http,
        allow_private_networks=settings.webhook_allow_private_networks,
        resolve=resolver,
    )


Policy = Annotated[urlguard.UrlPolicy, Depends(url_policy)]


def _endpoint_fields(row: asyncpg.Record) -> dict[str, object]:
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "event_types": list(row["event_types"]),
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
        "failing_since": row["failing_since"],
        "created_at": row["created_at"],
    }


def _endpoint_out(row: asyncpg.Record) -> EndpointOut:
    return EndpointOut.model_validate(_endpoint_fields(row))


@router.post(
    "/v1/webhook-endpoints",
    dependencies=[requires("webhooks:admin")],
    status_code=201,
    response_model=EndpointCreated,
)
async def create_endpoint(
    body: EndpointIn, who: Auth, rt: Rt, policy: Policy, settings: Cfg
) -> EndpointCreated:
    # Vetting may wait on DNS: done before the transaction opens, not inside it.
    url = await urlguard.vet_url(body.url, policy)
    async with rt.transaction() as conn:
        row, secret = await handlers.create_endpoint(
            conn, who.tenant_id, body, url, settings.secret_box()
        )
    return EndpointCreated.model_validate({**_endpoint_fields(row), "secret": secret})


@router.get(
    "/v1/webhook-endpoints",
    dependencies=[requires("webhooks:admin")],
    response_model=Page[EndpointOut],
)
async def list_endpoints(
    who: Auth, rt: Rt, page: PageParams, enabled: bool | None = None
) -> Page[EndpointOut]:
    async with rt.transaction() as conn:
        rows = await handlers.endpoint_page(conn, who.tenant_id, enabled, page)
    return page.answer(rows, _endpoint_out)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    dependencies=[requires("webhooks:admin")],
    response_model=EndpointOut,
)
async def get_endpoint(endpoint_id: str, who: Auth, rt: Rt) -> EndpointOut:
    async with rt.transaction() as conn:
        return _endpoint_out(await handlers.get_endpoint(conn, who.tenant_id, endpoint_id))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    dependencies=[requires("webhooks:admin")],
    response_model=Page[DeliveryOut],
)
async def delivery_log(
    endpoint_id: str,
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    status: DeliveryStatus | None = None,
) -> Page[DeliveryOut]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    async with rt.transaction() as conn:
        log = await handlers.delivery_log(conn, who.tenant_id, endpoint_id, status, created, page)
    return page.answer(
        log.deliveries, lambda d: _delivery_out(d, log.attempts.get(d["id"], [])), NEWEST
    )


@router.patch(
    "/v1/webhook-endpoints/{endpoint_id}",
    dependencies=[requires("webhooks:admin")],
    response_model=EndpointOut,
)
async def update_endpoint(
    endpoint_id: str, body: EndpointPatch, who: Auth, rt: Rt, policy: Policy
) -> EndpointOut:
    url = await urlguard.vet_url(body.url, policy) if body.url is not None else None
    async with rt.transaction() as conn:
        row = await handlers.update_endpoint(conn, who.tenant_id, endpoint_id, body, url)
    return _endpoint_out(row)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    dependencies=[requires("webhooks:admin")],
    response_model=SecretRotated,
)
async def rotate_secret(
    endpoint_id: str, who: Auth, rt: Rt, settings: Cfg, clock: AppClock
) -> SecretRotated:
    async with rt.transaction() as conn:
        secret, expires = await handlers.rotate_secret(
            conn,
            who.tenant_id,
            endpoint_id,
            now=clock(),
            overlap=timedelta(hours=settings.webhook_secret_rotation_overlap_hours),
            sealer=settings.secret_box(),
        )
    return SecretRotated(secret=secret, previous_expires_at=expires)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/resend",
    dependencies=[requires("webhooks:admin")],
    status_code=202,
    response_model=DeliveryOut,
)
async def resend(
    endpoint_id: str, delivery_id: str, who: Auth, rt: Rt, clock: AppClock
) -> DeliveryOut:
    """Send one settled (delivered or failed) message again, with a fresh retry schedule."""
    async with rt.transaction() as conn:
        row = await handlers.resend(conn, who.tenant_id, endpoint_id, delivery_id, clock())
    return _delivery_out(row, [])


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/replay",
    dependencies=[requires("webhooks:admin")],
    status_code=202,
    response_model=ReplayOut,
)
async def replay(
    endpoint_id: str, body: ReplayIn, who: Auth, rt: Rt, settings: Cfg, clock: AppClock
) -> ReplayOut:
    """Send again every delivery of this endpoint that failed since `since` (and before
    `until`), each with a fresh retry schedule."""
    async with rt.transaction() as conn:
        count = await handlers.replay_failed(
            conn,
            who.tenant_id,
            endpoint_id,
            body,
            now=clock(),
            limit=settings.webhook_replay_limit,
        )
    return ReplayOut(replayed=count)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/test",
    dependencies=[requires("webhooks:admin")],
    status_code=202,
    response_model=DeliveryOut,
)
async def send_test_event(endpoint_id: str, who: Auth, rt: Rt, clock: AppClock) -> DeliveryOut:
    """The "send test event" button: a `webhook.test.v1` message to this endpoint, signed,
    retried and logged like any other."""
    async with rt.transaction() as conn:
        row = await handlers.send_test_event(conn, who.tenant_id, endpoint_id, clock())
    return _delivery_out(row, [])


def _delivery_out(d: Mapping[str, Any], attempts: list[asyncpg.Record]) -> DeliveryOut:
    return DeliveryOut(
        id=d["id"],
        message_id=d["message_id"],
        event_type=d["event_type"],
        status=d["status"],
        attempt_count=d["attempts"],
        next_attempt_at=d["next_attempt_at"] if d["status"] == "pending" else None,
        last_status_code=d["last_status_code"],
        last_error=d["last_error"],
        delivered_at=d["delivered_at"],
        failed_at=d["failed_at"],
        created_at=d["created_at"],
        attempts=[
            AttemptOut(
                attempt=a["attempt"],
                attempted_at=a["attempted_at"],
                status_code=a["status_code"],
                latency_ms=a["latency_ms"],
                response_body=a["response_body"],
                error=a["error"],
                outcome=a["outcome"],
            )
            for a in attempts
        ],
    )

"""HTTP routes: authenticate, vet, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from notification_service import handlers, urlguard
from notification_service.config import Settings
from notification_service.schemas import (
    AttemptOut,
    DeliveryLog,
    DeliveryOut,
    EndpointCreated,
    EndpointIn,
    EndpointList,
    EndpointOut,
)
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]


def url_policy(request: Request) -> urlguard.UrlPolicy:
    """FastAPI dependency: the SSRF guard as configured, with the app's resolver."""
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
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
        "failing_since": row["failing_since"],
        "created_at": row["created_at"],
    }


def _endpoint_out(row: asyncpg.Record) -> EndpointOut:
    return EndpointOut.model_validate(_endpoint_fields(row))


@router.post(
    "/v1/webhook-endpoints", status_code=201, response_model=EndpointCreated, tags=["webhooks"]
)
async def create_endpoint(body: EndpointIn, who: Auth, rt: Rt, policy: Policy) -> EndpointCreated:
    # Vetting may wait on DNS: done before the transaction opens, not inside it.
    url = await urlguard.vet_url(body.url, policy)
    async with rt.transaction() as conn:
        row, secret = await handlers.create_endpoint(conn, who.tenant_id, body, url)
    return EndpointCreated.model_validate({**_endpoint_fields(row), "secret": secret})


@router.get("/v1/webhook-endpoints", response_model=EndpointList, tags=["webhooks"])
async def list_endpoints(who: Auth, rt: Rt) -> EndpointList:
    async with rt.transaction() as conn:
        rows = await handlers.list_endpoints(conn, who.tenant_id)
    return EndpointList(data=[_endpoint_out(r) for r in rows])


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"])
async def get_endpoint(endpoint_id: str, who: Auth, rt: Rt) -> EndpointOut:
    async with rt.transaction() as conn:
        return _endpoint_out(await handlers.get_endpoint(conn, who.tenant_id, endpoint_id))


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryLog,
    tags=["webhooks"],
)
async def delivery_log(
    endpoint_id: str,
    who: Auth,
    rt: Rt,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> DeliveryLog:
    async with rt.transaction() as conn:
        page = await handlers.delivery_log(
            conn, who.tenant_id, endpoint_id, limit=limit, before=before
        )
    return DeliveryLog(
        data=[
            DeliveryOut(
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
                    for a in page.attempts.get(d["id"], [])
                ],
            )
            for d in page.deliveries
        ],
        next_before=page.next_before,
    )

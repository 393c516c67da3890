"""HTTP routes of refunds and subscription cancellations."""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter, Response

from attribution_service.refunds import handlers
from attribution_service.refunds.schemas import (
    CancellationIn,
    CancellationOut,
    RefundIn,
    RefundOut,
)
from attribution_service.web import Auth, IdempotencyKey, Rt
from servicekit import money
from servicekit.auth import requires

router = APIRouter(tags=["conversions"])


def refund_out(r: asyncpg.Record) -> RefundOut:
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


@router.post(
    "/v1/conversions/{conversion_id}/refunds",
    dependencies=[requires("conversions:write")],
    status_code=201,
    response_model=RefundOut,
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
    return refund_out(row)


@router.post(
    "/v1/subscriptions/{subscription_id}/cancellation",
    dependencies=[requires("conversions:write")],
    status_code=201,
    response_model=CancellationOut,
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

"""Redemption and payout routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from reward_service.payouts import domain, handlers
from reward_service.payouts.schemas import (
    PayoutBatchIn,
    PayoutBatchOut,
    PayoutLineOut,
    PayoutLineUpdateIn,
    RedemptionIn,
    RedemptionOut,
)
from reward_service.units import format_minor, parse_unit
from reward_service.web import Auth, Now, PathId, Rt
from servicekit.auth import requires

router = APIRouter()


@router.post(
    "/v1/accounts/{holder_id}/redemptions",
    dependencies=[requires("rewards:write")],
    response_model=RedemptionOut,
    status_code=201,
    tags=["ledger"],
    responses={200: {"description": "a replay of the same Idempotency-Key"}},
)
async def redeem(
    holder_id: PathId,
    body: RedemptionIn,
    who: Auth,
    rt: Rt,
    at: Now,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> RedemptionOut:
    unit = parse_unit(body.unit, "/unit")
    async with rt.transaction() as conn:
        r = await handlers.redeem(
            conn,
            tenant_id=who.tenant_id,
            holder_id=holder_id,
            idempotency_key=idempotency_key,
            amount=body.amount_minor,
            unit=unit,
            reference=body.reference,
            now=at,
        )
    if not r.created:
        response.status_code = 200
    return RedemptionOut(
        id=r.id,
        holder_id=r.holder_id,
        amount_minor=r.amount,
        unit=r.unit,
        amount=format_minor(r.amount, r.unit),
        reference=r.reference,
        created_at=r.created_at,
    )


def _batch_out(batch: domain.PayoutBatch) -> PayoutBatchOut:
    return PayoutBatchOut(
        id=batch.id,
        currency=batch.unit,
        threshold_minor=batch.threshold,
        created_at=batch.created_at,
        lines=[_line_out(line) for line in batch.lines],
    )


def _line_out(line: domain.PayoutLine) -> PayoutLineOut:
    return PayoutLineOut(
        id=line.id,
        holder_type=line.holder_type,
        holder_id=line.holder_id,
        amount_minor=line.amount,
        amount=format_minor(line.amount, line.unit),
        currency=line.unit,
        status=line.status,
        reference=line.reference,
        reason=line.reason,
    )


@router.post(
    "/v1/payouts",
    dependencies=[requires("payouts:write")],
    response_model=PayoutBatchOut,
    status_code=201,
    tags=["payouts"],
)
async def create_payout_batch(body: PayoutBatchIn, who: Auth, rt: Rt, at: Now) -> PayoutBatchOut:
    async with rt.transaction() as conn:
        batch = await handlers.create_payout_batch(
            conn, who.tenant_id, body.currency, body.threshold_minor, at
        )
    return _batch_out(batch)


@router.get(
    "/v1/payouts/{batch_id}",
    dependencies=[requires("rewards:read")],
    response_model=PayoutBatchOut,
    tags=["payouts"],
)
async def get_payout_batch(batch_id: PathId, who: Auth, rt: Rt) -> PayoutBatchOut:
    async with rt.transaction() as conn:
        return _batch_out(await handlers.get_payout_batch(conn, who.tenant_id, batch_id))


@router.get(
    "/v1/payouts/{batch_id}/export.csv", dependencies=[requires("rewards:read")], tags=["payouts"]
)
async def export_payout_batch(batch_id: PathId, who: Auth, rt: Rt) -> Response:
    async with rt.transaction() as conn:
        batch = await handlers.get_payout_batch(conn, who.tenant_id, batch_id)
    return Response(
        domain.batch_csv(batch),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{batch.id}.csv"'},
    )


@router.post(
    "/v1/payouts/{batch_id}/lines/{line_id}",
    dependencies=[requires("payouts:write")],
    response_model=PayoutLineOut,
    tags=["payouts"],
)
async def settle_payout_line(
    batch_id: PathId,
    line_id: PathId,
    body: PayoutLineUpdateIn,
    who: Auth,
    rt: Rt,
    at: Now,
) -> PayoutLineOut:
    """Marks a line paid (the money left) or failed (it returns to the holder's available cash)."""
    async with rt.transaction() as conn:
        line = await handlers.settle_payout_line(
            conn, who.tenant_id, batch_id, line_id, body.status, body.reference, body.reason, at
        )
    return _line_out(line)

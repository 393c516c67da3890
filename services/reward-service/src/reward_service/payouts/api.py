"""Redemption and payout routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from reward_service.payouts import domain, handlers
from reward_service.payouts.schemas import (
    PayoutBatchIn,
    PayoutBatchOut,
    PayoutBatchSummaryOut,
    PayoutLineOut,
    PayoutLineUpdateIn,
    RedemptionIn,
    RedemptionOut,
)
from reward_service.units import format_minor, parse_unit
from reward_service.web import Auth, Now, PathId, Rt
from servicekit.auth import Principal, requires
from servicekit.pagination import CreatedParams, CreatedRange, Page, PageParams, PageQuery
from servicekit.runtime import Runtime

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


def _redemption_out(r: Any) -> RedemptionOut:
    return RedemptionOut(
        id=r["id"],
        holder_id=r["holder_id"],
        amount_minor=r["amount"],
        unit=r["unit"],
        amount=format_minor(r["amount"], r["unit"]),
        reference=r["reference"],
        created_at=r["created_at"],
    )


UnitQ = Annotated[str | None, Query(max_length=16, description="a currency code, POINTS, ...")]


async def _redemptions(
    who: Principal,
    rt: Runtime,
    page: PageQuery,
    created: CreatedRange,
    holder_id: str | None,
    unit: str | None,
) -> Page[RedemptionOut]:
    unit = parse_unit(unit, "/unit") if unit is not None else None
    async with rt.transaction() as conn:
        rows = await handlers.redemption_page(conn, who.tenant_id, holder_id, unit, created, page)
    return page.answer(rows, _redemption_out)


@router.get(
    "/v1/redemptions",
    dependencies=[requires("rewards:read")],
    response_model=Page[RedemptionOut],
    tags=["ledger"],
)
async def list_redemptions(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    holder_id: Annotated[str | None, Query(max_length=200)] = None,
    unit: UnitQ = None,
) -> Page[RedemptionOut]:
    """Redemptions, oldest first."""
    return await _redemptions(who, rt, page, created, holder_id, unit)


@router.get(
    "/v1/accounts/{holder_id}/redemptions",
    dependencies=[requires("rewards:read")],
    response_model=Page[RedemptionOut],
    tags=["ledger"],
)
async def list_holder_redemptions(
    holder_id: PathId,
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    unit: UnitQ = None,
) -> Page[RedemptionOut]:
    """One holder's redemptions, oldest first (404 for a holder unknown here)."""
    unit = parse_unit(unit, "/unit") if unit is not None else None
    async with rt.transaction() as conn:
        rows = await handlers.holder_redemption_page(
            conn, who.tenant_id, holder_id, unit, created, page
        )
    return page.answer(rows, _redemption_out)


def _batch_summary(b: Any) -> PayoutBatchSummaryOut:
    return PayoutBatchSummaryOut(
        id=b["id"],
        currency=b["unit"],
        threshold_minor=b["threshold"],
        created_at=b["created_at"],
        lines=b["lines"],
        amount_minor=b["total"],
        amount=format_minor(b["total"], b["unit"]),
        pending=b["pending"],
        paid=b["paid"],
        failed=b["failed"],
    )


@router.get(
    "/v1/payouts",
    dependencies=[requires("rewards:read")],
    response_model=Page[PayoutBatchSummaryOut],
    tags=["payouts"],
)
async def list_payout_batches(
    who: Auth, rt: Rt, page: PageParams, created: CreatedParams, currency: UnitQ = None
) -> Page[PayoutBatchSummaryOut]:
    """Payout batches, oldest first, their lines counted."""
    unit = parse_unit(currency, "/currency") if currency is not None else None
    async with rt.transaction() as conn:
        rows = await handlers.payout_batch_page(conn, who.tenant_id, unit, created, page)
    return page.answer(rows, _batch_summary)


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

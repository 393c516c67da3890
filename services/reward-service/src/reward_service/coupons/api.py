"""Coupon-pool routes."""

from __future__ import annotations

from fastapi import APIRouter

from reward_service.coupons import domain, handlers
from reward_service.coupons.schemas import CouponCodesIn, CouponPoolIn, CouponPoolOut
from reward_service.web import Auth, PathId, Rt, program_heard_of
from servicekit.auth import requires
from servicekit.pagination import Page, PageParams

router = APIRouter(tags=["coupons"])


def _pool_out(pool: domain.CouponPool) -> CouponPoolOut:
    return CouponPoolOut.model_validate(pool, from_attributes=True)


@router.post(
    "/v1/programs/{program_id}/coupon-pools",
    dependencies=[requires("rewards:write")],
    response_model=CouponPoolOut,
    status_code=201,
)
async def create_coupon_pool(
    program_id: PathId, body: CouponPoolIn, who: Auth, rt: Rt
) -> CouponPoolOut:
    await program_heard_of(rt, who.tenant_id, program_id)
    async with rt.transaction() as conn:
        pool = await handlers.create_coupon_pool(
            conn, who.tenant_id, program_id, body.name, body.low_threshold, body.codes
        )
    return _pool_out(pool)


@router.get(
    "/v1/programs/{program_id}/coupon-pools",
    dependencies=[requires("rewards:read")],
    response_model=Page[CouponPoolOut],
)
async def list_coupon_pools(
    program_id: PathId, who: Auth, rt: Rt, page: PageParams
) -> Page[CouponPoolOut]:
    """The program's coupon pools, oldest first, each with its counts of codes."""
    async with rt.transaction() as conn:
        pools = await handlers.coupon_pool_page(conn, who.tenant_id, program_id, page)
    return page.answer(pools, _pool_out)


@router.post(
    "/v1/coupon-pools/{pool_id}/codes",
    dependencies=[requires("rewards:write")],
    response_model=CouponPoolOut,
)
async def add_coupon_codes(
    pool_id: PathId, body: CouponCodesIn, who: Auth, rt: Rt
) -> CouponPoolOut:
    """Adds codes; codes already in the pool are skipped (`added` counts the new ones)."""
    async with rt.transaction() as conn:
        return _pool_out(await handlers.add_coupon_codes(conn, who.tenant_id, pool_id, body.codes))


@router.get(
    "/v1/coupon-pools/{pool_id}",
    dependencies=[requires("rewards:read")],
    response_model=CouponPoolOut,
)
async def get_coupon_pool(pool_id: PathId, who: Auth, rt: Rt) -> CouponPoolOut:
    async with rt.transaction() as conn:
        return _pool_out(await handlers.get_coupon_pool(conn, who.tenant_id, pool_id))

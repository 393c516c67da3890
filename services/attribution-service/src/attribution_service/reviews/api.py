"""HTTP routes of the review queue."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query

from attribution_service.reviews import handlers
from attribution_service.reviews.repository import ReviewFilter
from attribution_service.reviews.schemas import ReviewDecisionIn, ReviewOut
from attribution_service.web import Auth, Rt
from servicekit.auth import requires
from servicekit.pagination import CreatedParams, Page, PageParams

router = APIRouter(tags=["reviews"])


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


Id = Annotated[str | None, Query(max_length=100)]


@router.get(
    "/v1/reviews", dependencies=[requires("advocates:read")], response_model=Page[ReviewOut]
)
async def list_reviews(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    status: Annotated[
        Literal["open", "approved", "denied", "all"], Query(description="default: the open ones")
    ] = "open",
    program_id: Id = None,
    advocate_id: Id = None,
) -> Page[ReviewOut]:
    """The review queue by state, oldest first."""
    f = ReviewFilter(None if status == "all" else status, program_id, advocate_id, created)
    async with rt.transaction() as conn:
        rows = await handlers.review_page(conn, who.tenant_id, f, page)
    return page.answer(rows, _review)


@router.get(
    "/v1/reviews/{review_id}", dependencies=[requires("advocates:read")], response_model=ReviewOut
)
async def get_review(review_id: str, who: Auth, rt: Rt) -> ReviewOut:
    async with rt.transaction() as conn:
        return _review(await handlers.get_review(conn, who.tenant_id, review_id))


async def _decide(
    review_id: str, body: ReviewDecisionIn, who: Auth, rt: Rt, *, approve: bool
) -> ReviewOut:
    async with rt.transaction() as conn:
        row = await handlers.decide_review(
            conn,
            who.tenant_id,
            review_id,
            approve=approve,
            reason=body.reason,
            decided_by=body.decided_by,
        )
    return _review(row)


@router.post(
    "/v1/reviews/{review_id}/approve",
    dependencies=[requires("conversions:write")],
    response_model=ReviewOut,
)
async def approve_review(review_id: str, body: ReviewDecisionIn, who: Auth, rt: Rt) -> ReviewOut:
    return await _decide(review_id, body, who, rt, approve=True)


@router.post(
    "/v1/reviews/{review_id}/deny",
    dependencies=[requires("conversions:write")],
    response_model=ReviewOut,
)
async def deny_review(review_id: str, body: ReviewDecisionIn, who: Auth, rt: Rt) -> ReviewOut:
    return await _decide(review_id, body, who, rt, approve=False)

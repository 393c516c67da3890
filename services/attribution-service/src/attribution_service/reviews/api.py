"""HTTP routes of the review queue."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query

from attribution_service.conversions import fraud
from attribution_service.reviews import handlers
from attribution_service.reviews.repository import RISK_FIRST, ReviewFilter
from attribution_service.reviews.schemas import (
    AdvocateRiskOut,
    BulkDecisionIn,
    BulkDecisionOut,
    ReviewDecisionIn,
    ReviewOut,
)
from attribution_service.web import Auth, Rt
from servicekit.auth import requires
from servicekit.pagination import CreatedParams, Page, PageParams

router = APIRouter(tags=["reviews"])


def _review(r: asyncpg.Record, cluster: list[str] | None = None) -> ReviewOut:
    return ReviewOut(
        id=r["id"],
        conversion_id=r["conversion_id"],
        program_id=r["program_id"],
        advocate_id=r["advocate_id"],
        reasons=list(r["reasons"]),
        risk_score=r["risk_score"],
        status=r["status"],
        decision_reason=r["decision_reason"],
        decided_by=r["decided_by"],
        created_at=r["created_at"],
        decided_at=r["decided_at"],
        cluster_review_ids=cluster or [],
        advocate_risk_score=_advocate_score(r),
    )


def _advocate_score(r: asyncpg.Record) -> int | None:
    """The advocate's risk score where the listing joined their counts."""
    try:
        denied = r["advocate_denied"]
    except KeyError:
        return None
    return fraud.advocate_score(
        denied=denied or 0,
        flagged=r["advocate_flagged"] or 0,
        max_score=r["advocate_max_score"] or 0,
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
    """The review queue by state, riskiest first."""
    f = ReviewFilter(None if status == "all" else status, program_id, advocate_id, created)
    async with rt.transaction() as conn:
        rows = await handlers.review_page(conn, who.tenant_id, f, page)
    return page.answer(rows, _review, RISK_FIRST)


@router.post(
    "/v1/reviews/bulk",
    dependencies=[requires("conversions:write")],
    response_model=BulkDecisionOut,
)
async def decide_bulk(body: BulkDecisionIn, who: Auth, rt: Rt) -> BulkDecisionOut:
    """One decision on many reviews (a cluster, after a deny offered it), audited."""
    async with rt.transaction() as conn:
        audit_id, rows, changed = await handlers.decide_bulk(
            conn,
            who.tenant_id,
            body.review_ids,
            approve=body.decision == "approve",
            reason=body.reason,
            decided_by=body.decided_by,
            key_id=who.key_id,
        )
    return BulkDecisionOut(
        audit_id=audit_id,
        decision=body.decision,
        items=[_review(r) for r in rows],
        changed_ids=changed,
    )


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
        cluster = None if approve else await handlers.cluster_review_ids(conn, who.tenant_id, row)
    return _review(row, cluster)


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


@router.get(
    "/v1/advocates/{advocate_id}/risk",
    dependencies=[requires("advocates:read")],
    response_model=AdvocateRiskOut,
)
async def advocate_risk(advocate_id: str, who: Auth, rt: Rt) -> AdvocateRiskOut:
    """The advocate's risk score (0-100) and what it is made of."""
    async with rt.transaction() as conn:
        risk = await handlers.advocate_risk(conn, who.tenant_id, advocate_id)
    return AdvocateRiskOut.model_validate(risk)

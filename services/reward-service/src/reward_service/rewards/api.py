"""Reward routes: the list of rewards (capped and voided ones included) and cap usage."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query

from reward_service.rewards import handlers
from reward_service.rewards.repository import RewardFilter
from reward_service.rewards.schemas import (
    BudgetUsageOut,
    CapUsageOut,
    CapUsageReportOut,
    RewardOut,
    RewardState,
)
from reward_service.units import format_minor
from reward_service.web import Auth, Now, PathId, Rt
from servicekit.auth import requires
from servicekit.pagination import CreatedParams, Page, PageParams

router = APIRouter(tags=["rewards"])

Id = Annotated[str | None, Query(max_length=200)]


def _reward_out(r: asyncpg.Record) -> RewardOut:
    return RewardOut(
        id=r["id"],
        program_id=r["program_id"],
        advocate_id=r["advocate_id"],
        role=r["role"],
        holder_type=r["holder_type"],
        holder_id=r["holder_id"],
        purpose=r["purpose"],
        trigger=r["trigger"],
        conversion_id=r["conversion_id"],
        referral_id=r["referral_id"],
        kind=r["kind"],
        unit=r["unit"],
        amount_minor=r["amount"],
        amount=format_minor(r["amount"], r["unit"]),
        requested_minor=r["requested_amount"],
        state=r["state"],
        capped_reason=r["capped_reason"],
        capped_period=r["capped_period"],
        voided_minor=r["voided_amount"],
        clawed_back_minor=r["clawed_back_amount"],
        rule_version=r["rule_version"],
        available_at=r["available_at"],
        released_at=r["released_at"],
        created_at=r["created_at"],
    )


@router.get(
    "/v1/rewards",
    dependencies=[requires("rewards:read")],
    response_model=Page[RewardOut],
)
async def list_rewards(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    program_id: Id = None,
    advocate_id: Id = None,
    holder_id: Annotated[
        str | None, Query(max_length=200, description="who holds it: advocate or friend")
    ] = None,
    conversion_id: Id = None,
    state: RewardState | None = None,
) -> Page[RewardOut]:
    """Rewards, oldest first: capped ones (granted less than the rule gave, maybe nothing) and
    voided ones included."""
    f = RewardFilter(program_id, advocate_id, holder_id, conversion_id, state, created)
    async with rt.transaction() as conn:
        rows = await handlers.reward_page(conn, who.tenant_id, f, page)
    return page.answer(rows, _reward_out)


@router.get(
    "/v1/programs/{program_id}/cap-usage",
    dependencies=[requires("rewards:read")],
    response_model=CapUsageReportOut,
)
async def cap_usage(
    program_id: PathId,
    who: Auth,
    rt: Rt,
    at: Now,
    advocate_id: Annotated[
        str | None, Query(max_length=200, description="whose caps (omit: the budget only)")
    ] = None,
) -> CapUsageReportOut:
    """How much of each cap of the rule in force the advocate has used this period, and of the
    program's budget; what remains."""
    async with rt.transaction() as conn:
        report = await handlers.cap_usage(conn, who.tenant_id, program_id, advocate_id, at)
    budget = report.rule.definition.budget
    return CapUsageReportOut(
        program_id=program_id,
        advocate_id=advocate_id,
        rule_version=report.rule.version,
        caps=[
            CapUsageOut(
                period=u.cap.period,
                period_key=u.key,
                unit=u.unit,
                max_count=u.cap.max_count,
                max_amount_minor=u.cap.max_amount,
                used_count=u.used.count,
                used_amount_minor=u.used.amount,
                remaining_count=(
                    None if u.cap.max_count is None else max(0, u.cap.max_count - u.used.count)
                ),
                remaining_amount_minor=(
                    None if u.cap.max_amount is None else max(0, u.cap.max_amount - u.used.amount)
                ),
            )
            for u in report.caps
        ],
        budget=(
            None
            if budget is None or report.budget_spent is None
            else BudgetUsageOut(
                unit=budget.unit,
                budget_minor=budget.amount,
                spent_minor=report.budget_spent,
                remaining_minor=max(0, budget.amount - report.budget_spent),
            )
        ),
    )

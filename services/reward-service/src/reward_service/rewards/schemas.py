"""Bodies of the reward and cap-usage routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

RewardState = Literal["pending", "available", "voided", "capped"]


class RewardOut(BaseModel):
    id: str
    program_id: str
    advocate_id: str
    role: str = Field(description="advocate or friend")
    holder_type: str
    holder_id: str
    purpose: str = Field(description="referral or milestone")
    trigger: str | None
    conversion_id: str
    referral_id: str
    kind: str
    unit: str
    amount_minor: int = Field(description="granted (after caps and budget)")
    amount: str
    requested_minor: int = Field(description="what the rule gave before caps and budget")
    state: RewardState
    capped_reason: str | None = Field(
        description="advocate_count_cap, advocate_amount_cap or program_budget"
    )
    capped_period: str | None
    voided_minor: int
    clawed_back_minor: int
    rule_version: int | None
    available_at: datetime
    released_at: datetime | None
    created_at: datetime


class CapUsageOut(BaseModel):
    period: Literal["month", "year", "lifetime"]
    period_key: str = Field(description="the period now: 2026-05, 2026 or lifetime")
    unit: str
    max_count: int | None
    max_amount_minor: int | None
    used_count: int
    used_amount_minor: int
    remaining_count: int | None = Field(description="null: no count cap")
    remaining_amount_minor: int | None = Field(description="null: no amount cap")


class BudgetUsageOut(BaseModel):
    unit: str
    budget_minor: int
    spent_minor: int
    remaining_minor: int


class CapUsageReportOut(BaseModel):
    """How much of each cap of the rule in force an advocate has used, and of the program's
    budget; what remains of each."""

    program_id: str
    advocate_id: str | None
    rule_version: int
    caps: list[CapUsageOut] = Field(description="the advocate's, when advocate_id is given")
    budget: BudgetUsageOut | None = Field(description="null: the rule sets no budget")

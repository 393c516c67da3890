"""Bodies of the review queue's routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReviewOut(BaseModel):
    id: str
    conversion_id: str
    program_id: str
    advocate_id: str
    reasons: list[str]
    # 0-100, from the screening checks that fired (the queue lists the riskiest first)
    risk_score: int
    # the advocate's (GET /v1/advocates/{id}/risk), in the queue's listing
    advocate_risk_score: int | None = None
    status: Literal["open", "approved", "denied"]
    decision_reason: str | None
    decided_by: str | None
    created_at: datetime
    decided_at: datetime | None
    # After a deny: the open reviews of the rest of the conversion's cluster (the ring rule's),
    # offered for one decision (POST /v1/reviews/bulk).
    cluster_review_ids: list[str] = Field(default_factory=list)


class ReviewDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
    decided_by: str | None = Field(default=None, max_length=200)


class BulkDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review_ids: list[str] = Field(min_length=1, max_length=200)
    decision: Literal["approve", "deny"]
    reason: str = Field(min_length=1, max_length=1000)
    decided_by: str | None = Field(default=None, max_length=200)


class BulkDecisionOut(BaseModel):
    audit_id: str
    decision: Literal["approve", "deny"]
    # every review named, as it is now; `changed_ids`: those this request decided (the others
    # had this decision already)
    items: list[ReviewOut]
    changed_ids: list[str]


class AdvocateRiskOut(BaseModel):
    advocate_id: str
    denied: int
    flagged: int
    riskiest_conversion_score: int
    # 0-100: half the riskiest referral's score, plus for each referral denied and flagged
    risk_score: int
    auto_blocked_at: datetime | None

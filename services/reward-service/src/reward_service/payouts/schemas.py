"""Bodies of the redemption and payout routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reward_service import units
from reward_service.units import Minor


class RedemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: Minor
    unit: str = Field(description="a currency code, POINTS, or a quantity's unit")
    reference: str | None = Field(default=None, max_length=200)


class RedemptionOut(BaseModel):
    id: str
    holder_id: str
    amount_minor: int
    unit: str
    amount: str
    reference: str | None
    created_at: datetime


class PayoutBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str
    threshold_minor: Minor

    @field_validator("currency")
    @classmethod
    def _currency_in_use(cls, value: str) -> str:
        return units.currency_field(value)


class PayoutLineOut(BaseModel):
    id: str
    holder_type: str
    holder_id: str
    amount_minor: int
    amount: str
    currency: str
    status: str
    reference: str | None
    reason: str | None


class PayoutBatchOut(BaseModel):
    id: str
    currency: str
    threshold_minor: int
    created_at: datetime
    lines: list[PayoutLineOut]


class PayoutBatchSummaryOut(BaseModel):
    """A batch in a list: its lines counted (GET the batch for the lines themselves)."""

    id: str
    currency: str
    threshold_minor: int
    created_at: datetime
    lines: int
    amount_minor: int = Field(description="the lines' total")
    amount: str
    pending: int
    paid: int
    failed: int


class PayoutLineUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["paid", "failed"]
    reference: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=500)

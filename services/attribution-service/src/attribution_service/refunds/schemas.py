"""Bodies of the refund and subscription cancellation routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from servicekit.problems import InvalidInput


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The merchant's refund id makes the call idempotent (or send an Idempotency-Key header).
    refund_id: str | None = Field(default=None, min_length=1, max_length=200)
    amount: Decimal | None = Field(default=None, gt=0, description="omit for the rest in full")
    amount_minor: int | None = Field(default=None, gt=0, le=10**15)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    refunded_at: AwareDatetime | None = None
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _amounts(self) -> RefundIn:
        if self.amount is not None and self.amount_minor is not None:
            raise InvalidInput("send amount or amount_minor, not both", field="/amount_minor")
        return self


class RefundOut(BaseModel):
    id: str
    refund_id: str
    amount: str
    amount_minor: int
    currency: str
    refunded_total: str
    full: bool
    refunded_at: datetime


class CancellationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(default=None, min_length=1, max_length=200)
    cancelled_at: AwareDatetime | None = None


class CancellationOut(BaseModel):
    subscription_id: str
    customer_id: str | None
    cancelled_at: datetime
    advocate_id: str | None
    program_id: str | None

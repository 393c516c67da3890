"""Bodies of the coupon-pool routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Code = Annotated[str, Field(min_length=1, max_length=100)]


class CouponPoolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    low_threshold: StrictInt = Field(default=10, ge=0, le=1_000_000)
    codes: list[Code] = Field(default_factory=list, max_length=100_000)


class CouponCodesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: list[Code] = Field(min_length=1, max_length=100_000)


class CouponPoolOut(BaseModel):
    id: str
    program_id: str
    name: str
    low_threshold: int
    total: int
    remaining: int
    added: int | None = None
    created_at: datetime

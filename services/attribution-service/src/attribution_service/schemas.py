"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class ConversionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="signup, purchase, or a custom type the program names",
    )
    customer_id: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    click_id: str | None = Field(default=None, pattern=r"^clk_[a-z2-7]{24}$")
    code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")
    order_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Decimal, not float: a JSON number is read from its text, and more decimals than the
    # currency has are refused (see servicekit.money.to_minor).
    amount: Decimal | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    occurred_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _purchase_fields(self) -> ConversionIn:
        if self.amount is not None and self.currency is None:
            raise ValueError("currency is required with amount")
        if self.type == "purchase" and (self.order_id is None or self.amount is None):
            raise ValueError("a purchase needs order_id, amount and currency")
        return self


class ConversionOut(BaseModel):
    id: str
    type: str
    customer_id: str
    status: str
    program_id: str | None
    advocate_id: str | None
    referral_id: str | None
    evidence: str | None
    is_first_purchase: bool
    order_id: str | None
    amount: str | None
    currency: str | None
    occurred_at: datetime
    explanation: dict[str, Any]

"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from reward_service import domain


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: money is an integer of minor units; 20.5 or "2000" is refused, never coerced.
    amount_minor: StrictInt = Field(
        gt=0, le=domain.MAX_AMOUNT_MINOR, description="amount in the currency's minor units (cents)"
    )
    currency: str = Field(description="ISO 4217 code of a currency in use, e.g. USD")

    @field_validator("currency")
    @classmethod
    def _currency_in_use(cls, value: str) -> str:
        code = domain.parse_currency(value)
        if code is None:
            raise PydanticCustomError(
                "currency", "'{code}' is not an ISO 4217 currency in use", {"code": value}
            )
        return code


class RewardRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advocate_reward: MoneyIn
    trigger: domain.Trigger
    hold_days: StrictInt = Field(
        default=0,
        ge=0,
        le=domain.MAX_HOLD_DAYS,
        description="days a reward stays pending (the refund window)",
    )


class MoneyOut(BaseModel):
    amount_minor: int
    currency: str
    amount: str = Field(description="decimal string with the currency's minor-unit places")


class RewardRuleOut(BaseModel):
    id: str
    program_id: str
    version: int
    valid_from: datetime
    advocate_reward: MoneyOut
    trigger: domain.Trigger
    hold_days: int
    created_at: datetime


class BalanceOut(BaseModel):
    unit: str
    available_minor: int
    pending_minor: int
    available: str
    pending: str


class AccountBalanceOut(BaseModel):
    holder_id: str
    balances: list[BalanceOut]

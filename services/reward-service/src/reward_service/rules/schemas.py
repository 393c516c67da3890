"""Bodies of the reward-rule routes. Single fields are checked here (so a bad one is named in the
problem+json); rules that span fields (tiers overlapping, units agreeing) in rules/body.py."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from reward_service import units
from reward_service.rules import domain
from reward_service.units import Minor

# A quantity's unit (MB, GB, SEATS): letters first, short, upper-cased; never a currency code.
UNIT_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,15}$"


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: Minor = Field(description="amount in the currency's minor units (cents)")
    currency: str = Field(description="ISO 4217 code of a currency in use, e.g. USD")

    @field_validator("currency")
    @classmethod
    def _currency_in_use(cls, value: str) -> str:
        return units.currency_field(value)


class AmountIn(BaseModel):
    """Exactly one of: `amount_minor` + `currency` (fixed money), `percent` + `currency` (of the
    order, rounded by `rounding`), `points`, or `quantity` + `unit` (e.g. 500 MB)."""

    model_config = ConfigDict(extra="forbid")

    amount_minor: Minor | None = None
    percent: Decimal | None = Field(default=None, gt=0, le=100, max_digits=9, decimal_places=4)
    currency: str | None = None
    rounding: domain.Rounding = Field(
        default="half_even", description="how a percent amount is rounded to minor units"
    )
    max_amount_minor: Minor | None = Field(
        default=None, description="upper bound of one percent reward"
    )
    points: Minor | None = None
    quantity: Minor | None = None
    unit: str | None = Field(default=None, pattern=UNIT_PATTERN)

    @field_validator("currency")
    @classmethod
    def _currency_in_use(cls, value: str | None) -> str | None:
        return None if value is None else units.currency_field(value)

    @field_validator("unit")
    @classmethod
    def _not_a_currency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if units.is_currency(value.upper()):
            raise PydanticCustomError(
                "unit", "'{unit}' is a currency: use amount_minor + currency", {"unit": value}
            )
        return value.upper()


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_referrals: StrictInt = Field(ge=1)
    max_referrals: StrictInt | None = Field(default=None, ge=1)
    amount: AmountIn


class SideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: domain.Trigger
    amount: AmountIn | None = None
    kind: domain.RewardKind = "credit"
    min_order_minor: StrictInt | None = Field(default=None, ge=0, le=units.MAX_AMOUNT_MINOR)
    nth: StrictInt | None = Field(
        default=None, ge=1, description="subscription_payment: reward only the n-th payment"
    )
    custom_type: str | None = Field(default=None, min_length=1, max_length=100)
    tiers: list[TierIn] = Field(default_factory=list, max_length=50)
    coupon_pool_id: str | None = Field(default=None, min_length=1, max_length=200)


class MilestoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    referrals: StrictInt = Field(ge=1)
    amount: AmountIn
    kind: Literal["credit", "cash", "points", "custom"] = "credit"


class CapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: domain.Period
    max_count: StrictInt | None = Field(default=None, ge=0)
    max_amount: StrictInt | None = Field(
        default=None, ge=0, le=units.MAX_AMOUNT_MINOR, description="in the advocate side's unit"
    )


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Minor = Field(description="in minor units of `unit`")
    unit: str = Field(description="a currency code, POINTS, or a quantity's unit")


class VariantIn(BaseModel):
    """What advocates of one segment earn instead of the default (sides, milestones, caps)."""

    model_config = ConfigDict(extra="forbid")

    segment: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="a segment's name")
    order: StrictInt | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="variants are tried by ascending order; required where two could overlap",
    )
    advocate: SideIn | None = None
    friend: SideIn | None = None
    milestones: list[MilestoneIn] = Field(default_factory=list, max_length=50)
    caps: list[CapIn] = Field(default_factory=list, max_length=3)


class RewardRuleIn(BaseModel):
    """A program's reward rule. `advocate_reward` + `trigger` is the first API's shorthand for
    a fixed advocate reward and stays accepted."""

    model_config = ConfigDict(extra="forbid")

    hold_days: StrictInt = Field(
        default=0,
        ge=0,
        le=domain.MAX_HOLD_DAYS,
        description="days a reward stays pending (the refund window)",
    )
    clawback: domain.ClawbackPolicy = "negative_entry"
    advocate: SideIn | None = None
    friend: SideIn | None = None
    milestones: list[MilestoneIn] = Field(default_factory=list, max_length=50)
    caps: list[CapIn] = Field(default_factory=list, max_length=3)
    budget: BudgetIn | None = None
    variants: list[VariantIn] = Field(default_factory=list, max_length=20)
    advocate_reward: MoneyIn | None = None
    trigger: domain.Trigger | None = None


class MoneyOut(BaseModel):
    amount_minor: int
    currency: str
    amount: str = Field(description="decimal string with the currency's minor-unit places")


class RewardRuleOut(BaseModel):
    id: str
    program_id: str
    version: int
    valid_from: datetime
    hold_days: int
    clawback: str
    advocate: dict[str, Any] | None
    friend: dict[str, Any] | None
    milestones: list[dict[str, Any]]
    caps: list[dict[str, Any]]
    budget: dict[str, Any] | None
    variants: list[dict[str, Any]] = Field(default_factory=list)
    # the first API's shape, filled when the advocate side is a fixed money reward
    advocate_reward: MoneyOut | None = None
    trigger: domain.Trigger | None = None
    created_at: datetime
    promoted_from: dict[str, Any] | None = Field(
        default=None,
        description="the experiment whose winner this version is (attribution-service's "
        "promote): experiment_id, variant, forced, promoted_at; null for a version a PUT wrote",
    )

"""Bodies of the conversion routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

from attribution_service.refunds.schemas import RefundOut
from servicekit.pagination import Page
from servicekit.problems import InvalidInput

# link-service's click ids: "clk_" + 32 hex digits (earlier ones: 24 base32 characters).
CLICK_ID = r"^clk_[a-z0-9]{16,64}$"
CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$"


class ConversionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="signup, purchase, subscription_payment, or a custom type the program names",
    )
    customer_id: str = Field(min_length=1, max_length=200, description="the merchant's id")
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    click_id: str | None = Field(default=None, pattern=CLICK_ID)
    code: str | None = Field(default=None, pattern=CODE, description="typed at checkout")
    order_id: str | None = Field(default=None, min_length=1, max_length=200)
    subscription_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Decimal, not float: a JSON number is read from its text, and more decimals than the
    # currency has are refused (see servicekit.money.to_minor). Or integer minor units.
    amount: Decimal | None = Field(default=None, ge=0, description='e.g. "59.90"')
    amount_minor: int | None = Field(default=None, ge=0, le=10**15, description="e.g. 5990")
    currency: str | None = Field(default=None, min_length=3, max_length=3, description="ISO 4217")
    occurred_at: AwareDatetime | None = None
    # Screening inputs: the friend's IP address and device id are hashed on arrival (the same
    # keyed hash link-service applies to clicks) and never stored in clear.
    ip: IPvAnyAddress | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Ring screening inputs, hashed on arrival like the IP (never stored in clear): the
    # friend's browser (with their network), the shipping address and the payment method's
    # fingerprint (e.g. Stripe's card fingerprint), where the merchant has them.
    user_agent: str | None = Field(default=None, min_length=1, max_length=1000)
    shipping_address: str | None = Field(default=None, min_length=1, max_length=1000)
    payment_fingerprint: str | None = Field(default=None, min_length=1, max_length=200)
    existing_customer: bool = Field(default=False, description="the merchant knows them already")
    country: str | None = Field(
        default=None,
        description="the friend's country, ISO 3166-1 alpha-2: the program's eligibility"
        " rule on friends' countries applies to it",
    )

    # Rules across fields raise InvalidInput naming the one at fault (a ValueError here would
    # be located at the whole body).
    @model_validator(mode="after")
    def _amounts(self) -> ConversionIn:
        if self.amount is not None and self.amount_minor is not None:
            raise InvalidInput("send amount or amount_minor, not both", field="/amount_minor")
        paid = self.amount is not None or self.amount_minor is not None
        if paid and self.currency is None:
            raise InvalidInput("currency is required with an amount", field="/currency")
        if self.type in ("purchase", "subscription_payment") and (
            self.order_id is None or not paid
        ):
            raise InvalidInput(
                f"a {self.type} needs order_id, an amount and currency",
                field="/order_id" if self.order_id is None else "/amount",
            )
        if self.type == "subscription_payment" and self.subscription_id is None:
            raise InvalidInput(
                "a subscription_payment needs subscription_id", field="/subscription_id"
            )
        return self


class ConversionOut(BaseModel):
    id: str
    type: str
    customer_id: str
    status: Literal["pending", "attributed", "review", "rejected", "organic"]
    decision: str | None
    program_id: str | None
    advocate_id: str | None
    referral_id: str | None
    evidence: str | None
    is_first_purchase: bool
    sequence: int | None
    order_id: str | None
    subscription_id: str | None
    amount: str | None
    amount_minor: int | None
    currency: str | None
    refunded: str | None
    occurred_at: datetime
    country: str | None = None
    decided_at: datetime | None
    explanation: dict[str, Any]
    refunds: list[RefundOut] = Field(default_factory=list)


class ReferralOut(BaseModel):
    id: str
    program_id: str
    advocate_id: str
    customer_id: str = Field(description="the referred customer")
    evidence: str
    click_id: str | None
    created_at: datetime


class CustomerOut(BaseModel):
    """Everything attribution-service holds about one customer in one program."""

    program_id: str
    customer_id: str
    referral: ReferralOut | None = Field(description="who referred the customer, if anyone")
    advocate_ids: list[str] = Field(description="the customer as an advocate of the program")
    conversions: Page[ConversionOut] = Field(
        description="the first page of the customer's conversions; the rest: GET "
        "/v1/conversions?program_id=&customer_id=&cursor="
    )

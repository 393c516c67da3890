"""Bodies of the analytics routes. The definitions of the figures are written here, in the
field descriptions, so they are in the OpenAPI document."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field

from attribution_service.analytics import domain


class Rates(BaseModel):
    shared: float | None = Field(
        description="advocates who shared / advocates enrolled (null without advocates)"
    )
    visitor_to_signup: float | None = Field(description="signups / unique visitors")
    signup_to_first_purchase: float | None = Field(description="first purchases / signups")
    visitor_to_first_purchase: float | None = Field(description="first purchases / unique visitors")


class RevenueFigures(BaseModel):
    currency: str
    purchases: int = Field(
        description="attributed conversions with an amount (purchases, payments)"
    )
    gross_minor: int = Field(description="their amounts, in minor units of `currency`")
    refunded_minor: int = Field(description="refunds of attributed conversions, by refund day")
    net_minor: int = Field(description="gross - refunded")

    @classmethod
    def of(
        cls, *, currency: str, purchases: int, gross_minor: int, refunded_minor: int
    ) -> RevenueFigures:
        return cls(
            currency=currency,
            purchases=purchases,
            gross_minor=gross_minor,
            refunded_minor=refunded_minor,
            net_minor=gross_minor - refunded_minor,
        )


class CostFigures(BaseModel):
    unit: str = Field(
        description="a currency (amounts in its minor units) or a unit such as points or MB"
    )
    issued: int = Field(description="rewards issued (pending or available), by the day issued")
    voided: int = Field(description="pending rewards voided before they became available")
    clawed_back: int = Field(description="available rewards taken back after a refund")
    net: int = Field(description="issued - voided - clawed_back: what the ledger keeps")
    cost_per_acquired_customer: int | None = Field(
        description="net / referred first purchases, rounded half up (null without any)"
    )
    roi: float | None = Field(
        description="(referred net revenue - net cost) / net cost, when the unit is a currency "
        "with referred revenue in the same period; null otherwise"
    )

    @classmethod
    def of(
        cls,
        *,
        unit: str,
        issued: int,
        voided: int,
        clawed_back: int,
        acquired: int,
        net_revenue: dict[str, int],
    ) -> CostFigures:
        net = issued - voided - clawed_back
        return cls(
            unit=unit,
            issued=issued,
            voided=voided,
            clawed_back=clawed_back,
            net=net,
            cost_per_acquired_customer=domain.per_customer(net, acquired),
            roi=domain.roi(net_revenue[unit], net) if unit in net_revenue else None,
        )


class Figures(BaseModel):
    advocates_enrolled: int | None = Field(
        description="advocates enrolled (null when a channel is asked: enrollment has none)"
    )
    advocates_shared: int = Field(
        description="distinct advocates whose link a human clicked at least once"
    )
    clicks: int = Field(description="human clicks (bots never count)")
    bot_clicks: int = Field(description="clicks from bots, shown apart, counted nowhere else")
    unique_visitors: int = Field(
        description="distinct human visitors (by IP hash; a click without one is its own visitor)"
    )
    signups: int | None = Field(description="attributed signup conversions")
    first_purchases: int | None = Field(
        description="referred friends' first attributed purchases: the customers acquired"
    )
    rates: Rates
    revenue: list[RevenueFigures] = Field(description="referred revenue, per currency")
    reward_cost: list[CostFigures] = Field(description="reward cost, per currency or unit")


class Bucket(BaseModel):
    start: date
    end: date
    figures: Figures


class ChannelFigures(BaseModel):
    channel: str
    clicks: int
    bot_clicks: int
    unique_visitors: int
    advocates_shared: int


class FunnelOut(BaseModel):
    program_id: str
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    interval: domain.Interval
    channel: str | None
    time_zone: str = Field(
        description="the zone of the days; programs carry none yet, so always UTC"
    )
    totals: Figures = Field(description="the whole range (distinct counts over the whole range)")
    buckets: list[Bucket]
    channels: list[ChannelFigures] = Field(
        description="click figures per share channel over the whole range (without `channel`)"
    )


class ViralBucket(BaseModel):
    start: date | None = Field(description="null for the whole range")
    end: date | None
    advocates_enrolled: int
    invites: int = Field(description="unique human visitors who arrived through an advocate's link")
    referred_first_purchases: int
    invites_per_advocate: float | None = Field(description="invites / advocates enrolled")
    invite_conversion_rate: float | None = Field(description="referred first purchases / invites")
    k_factor: float | None = Field(
        description="invites per advocate x invite conversion rate (= referred first purchases "
        "per advocate enrolled); above 1 the program grows on itself"
    )
    cycle_time_median_seconds: float | None = Field(
        description="viral cycle time: the median time from an advocate's enrollment to their "
        "referred friend's first purchase, over the first purchases in the bucket"
    )


class ViralOut(BaseModel):
    program_id: str
    time_zone: str
    totals: ViralBucket
    buckets: list[ViralBucket]


class Cohort(BaseModel):
    week: date = Field(description="the Monday of the advocates' enrollment week")
    advocates: int
    referred_within_7_days: int = Field(
        description="advocates of the week whose first referral came within 7 days of enrolling"
    )
    referred_within_30_days: int
    referred_within_90_days: int


class CohortsOut(BaseModel):
    program_id: str
    time_zone: str
    cohorts: list[Cohort]


class LeaderboardEntry(BaseModel):
    rank: int = Field(description="1-based; ties by advocate id")
    advocate_id: str
    display_name: str = Field(description="first name and last initial, or a masked id")
    score: int


class LeaderboardOut(BaseModel):
    program_id: str
    metric: domain.Metric
    unit: str | None
    period: str = Field(description="all, month:YYYY-MM or week:YYYY-Www (the current one)")
    entries: list[LeaderboardEntry]


class CustomerValueOut(BaseModel):
    """One group of customers who bought in the window, in one currency (definitions:
    attribution README, "Growth analytics")."""

    customers: int = Field(description="customers with a purchase in the window")
    purchases: int
    revenue_minor: int
    lifespan_days: float | None = Field(
        description="mean days from a customer's first to last purchase ever seen, plus one"
    )
    aov_minor: float | None = Field(description="average order value: revenue / purchases")
    purchases_per_customer: float | None = Field(description="purchases / customers")
    customer_value_minor: float | None = Field(
        description="AOV x purchases per customer: what a customer brings per window"
    )
    clv_minor: float | None = Field(
        description="customer value x average lifespan in windows (lifespan days / window "
        "days, at least 1)"
    )


class ExactValueOut(BaseModel):
    """CustomerValueOut's figures without floats: amounts in whole minor units, each rounded
    half up once from its exact value (CLV from the exact customer value), ratios as Decimal
    strings of 4 places."""

    customers: int = Field(description="customers with a purchase in the window")
    purchases: int
    revenue_minor: int
    lifespan_days: Decimal | None = Field(
        description="mean days from a customer's first to last purchase ever seen, plus one"
    )
    aov_minor: int | None = Field(description="average order value: revenue / purchases")
    purchases_per_customer: Decimal | None = Field(description="purchases / customers")
    customer_value_minor: int | None = Field(
        description="AOV x purchases per customer (= revenue / customers): what a customer "
        "brings per window"
    )
    clv_minor: int | None = Field(
        description="customer value x average lifespan in windows (lifespan days / window "
        "days, at least 1)"
    )


class ExactGroupsOut(BaseModel):
    referred: ExactValueOut = Field(description="customers this program referred")
    others: ExactValueOut = Field(
        description="the merchant's customers never referred by any program, seen in the window"
    )


class CohortValueOut(BaseModel):
    week: date | None = Field(
        description="the ISO week (its Monday, in the program's time zone) the referring "
        "advocate enrolled; null for customers whose referral or advocate's enrollment is "
        "not folded here yet"
    )
    referred: ExactValueOut = Field(
        description="of the program's referred customers who bought in the window, those this "
        "cohort's advocates referred (the cohorts add up to `exact.referred`)"
    )


class CurrencyValue(BaseModel):
    currency: str
    referred: CustomerValueOut = Field(description="customers this program referred")
    others: CustomerValueOut = Field(
        description="the merchant's customers never referred by any program"
    )
    exact: ExactGroupsOut = Field(
        description="`referred` and `others` in whole minor units and Decimals (no floats)"
    )
    cohorts: list[CohortValueOut] = Field(
        description="the referred customers by their advocate's enrollment week, oldest first"
    )
    cost_per_acquired_customer: int | None = Field(
        description="net reward cost in this currency / referred first purchases"
    )
    payback_days: float | None = Field(
        description="cost per acquired customer / (referred customer value / window days)"
    )


class ClvOut(BaseModel):
    program_id: str
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    window_days: int
    time_zone: str
    currencies: list[CurrencyValue]


class AdvocateFiguresOut(BaseModel):
    advocate_id: str
    display_name: str = Field(description="first name and last initial, or a masked id")
    start: date = Field(serialization_alias="from")
    end: date = Field(serialization_alias="to")
    clicks: int = Field(description="human clicks on the advocate's links")
    referrals: int = Field(description="friends attributed to the advocate")
    signups: int
    first_purchases: int
    revenue_minor: dict[str, int] = Field(description="referred revenue per currency (gross)")
    earned: dict[str, int] = Field(
        description="rewards that became available to the advocate, less claw-backs, per unit"
    )

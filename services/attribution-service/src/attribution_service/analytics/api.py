"""HTTP routes of growth analytics: the funnel and KPIs (JSON or CSV), viral metrics, cohorts
and leaderboards. Every figure comes from the read models the consumers fold; nothing here
reads another feature's tables or asks another service."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from attribution_service.analytics import domain, handlers
from attribution_service.analytics.schemas import (
    AdvocateFiguresOut,
    ClvOut,
    CohortsOut,
    Figures,
    FunnelOut,
    LeaderboardEntry,
    LeaderboardOut,
    ViralOut,
)
from attribution_service.web import Rt
from servicekit.auth import Principal, requires

router = APIRouter(tags=["analytics"])

Reader = Annotated[Principal, requires("programs:read")]
From = Annotated[
    date | None, Query(alias="from", description="first day (default: 29 days before `to`)")
]
To = Annotated[date | None, Query(description="last day, inclusive (default: today)")]
IntervalQ = Annotated[domain.Interval, Query(description="bucket size")]
PeriodQ = Annotated[
    domain.Period, Query(description="all time, or the current calendar month or ISO week")
]
UnitQ = Annotated[
    str | None,
    Query(max_length=16, description="with metric=earned: the unit (USD, points, ...)"),
]

CSV_TYPE = "text/csv"


@router.get(
    "/v1/programs/{program_id}/analytics",
    response_model=FunnelOut,
    response_model_by_alias=True,
    responses={
        200: {"content": {CSV_TYPE: {}}, "description": "JSON, or CSV with Accept: text/csv"}
    },
    summary="Funnel and KPIs of a program",
    description="Advocates enrolled and who shared, clicks (human; bots apart) and unique "
    "visitors, signups, first purchases, the rates between the steps, referred revenue per "
    "currency, reward cost per currency or unit (issued, voided, clawed back, net), cost per "
    "acquired customer and ROI; per bucket of `interval`, for the range, and per channel. "
    "With `channel`, only the figures a channel has (clicks, visitors, sharers). "
    "`Accept: text/csv` answers one CSV row per bucket and a last row for the range.",
)
async def get_funnel(
    program_id: str,
    who: Reader,
    rt: Rt,
    start: From = None,
    to: To = None,
    interval: IntervalQ = "day",
    channel: Annotated[str | None, Query(max_length=40)] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    r = domain.query_range(start, to, interval, handlers.today())
    async with rt.transaction() as conn:
        out = await handlers.funnel(conn, who.tenant_id, program_id, r, channel)
    if accept and CSV_TYPE in accept:
        return Response(funnel_csv(out), media_type=CSV_TYPE)
    return out


@router.get(
    "/v1/programs/{program_id}/analytics/viral",
    response_model=ViralOut,
    summary="Viral metrics of a program: K-factor and cycle time",
    description="Per bucket and for the range: invites (unique human visitors through an "
    "advocate's link), invites per advocate (invites / advocates enrolled), invite conversion "
    "rate (referred first purchases / invites), K-factor (their product), and the viral cycle "
    "time (median time from an advocate's enrollment to their referred friend's first purchase).",
)
async def get_viral(
    program_id: str,
    who: Reader,
    rt: Rt,
    start: From = None,
    to: To = None,
    interval: IntervalQ = "week",
) -> ViralOut:
    r = domain.query_range(start, to, interval, handlers.today())
    async with rt.transaction() as conn:
        return await handlers.viral(conn, who.tenant_id, program_id, r)


@router.get(
    "/v1/programs/{program_id}/analytics/cohorts",
    response_model=CohortsOut,
    summary="Cohorts of advocates by enrollment week",
    description="For each week advocates enrolled in (from `from` to `to`): how many enrolled, "
    "and how many of them first referred someone within 7, 30 and 90 days of enrolling.",
)
async def get_cohorts(
    program_id: str, who: Reader, rt: Rt, start: From = None, to: To = None
) -> CohortsOut:
    r = domain.query_range(start, to, "week", handlers.today())
    async with rt.transaction() as conn:
        return await handlers.cohorts(conn, who.tenant_id, program_id, r)


@router.get(
    "/v1/programs/{program_id}/analytics/customer-value",
    response_model=ClvOut,
    summary="Customer value and CLV of referred customers beside the merchant's others",
    description="Of the customers who bought from `from` to `to` (every purchase the merchant "
    "reports, referred or not), per currency: customers this program referred beside the "
    "merchant's customers never referred. Average order value (AOV) = revenue / purchases; "
    "purchases per customer = purchases / customers; customer value = AOV x purchases per "
    "customer (per window); average lifespan = mean days from a customer's first to last "
    "purchase ever seen, plus one; CLV = customer value x max(1, lifespan / window days); "
    "payback = cost per acquired customer / (referred customer value / window days). "
    "The float figures are kept for the first clients; `exact` has the same two groups without "
    "floats (amounts in whole minor units, each rounded half up once from its exact value, CLV "
    "from the exact customer value; ratios as Decimal strings of 4 places), and `cohorts` the "
    "referred customers by the ISO week their referring advocate enrolled (per program and "
    "cohort; the cohorts add up to `exact.referred`). Every figure is per currency.",
)
async def get_customer_value(
    program_id: str, who: Reader, rt: Rt, start: From = None, to: To = None
) -> ClvOut:
    r = domain.query_range(start, to, "month", handlers.today())
    async with rt.transaction() as conn:
        return await handlers.customer_value(conn, who.tenant_id, program_id, r)


@router.get(
    "/v1/programs/{program_id}/analytics/advocates/{advocate_id}",
    response_model=AdvocateFiguresOut,
    summary="One advocate's figures",
    description="Human clicks on their links, friends referred, signups, first purchases, "
    "referred revenue per currency and rewards earned per unit, from `from` to `to`.",
)
async def get_advocate_figures(
    program_id: str, advocate_id: str, who: Reader, rt: Rt, start: From = None, to: To = None
) -> AdvocateFiguresOut:
    r = domain.query_range(start, to, "month", handlers.today())
    async with rt.transaction() as conn:
        return await handlers.advocate_figures(conn, who.tenant_id, program_id, advocate_id, r)


@router.get(
    "/v1/programs/{program_id}/leaderboard",
    response_model=LeaderboardOut,
    summary="Top advocates",
    description="By referrals (attributed referred friends) or by rewards earned in one unit "
    "(available rewards less claw-backs); ties by advocate id; names masked, never an email.",
)
async def get_leaderboard(
    program_id: str,
    who: Reader,
    rt: Rt,
    metric: domain.Metric = "referrals",
    period: PeriodQ = "all",
    unit: UnitQ = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> LeaderboardOut:
    async with rt.transaction() as conn:
        return await handlers.leaderboard(
            conn, who.tenant_id, program_id, metric, unit, period, limit
        )


@router.get(
    "/v1/programs/{program_id}/leaderboard/{advocate_id}",
    response_model=LeaderboardEntry,
    summary="One advocate's rank",
    description="Rank and score of one advocate, however far from the top; 404 when they have "
    "no score in the period.",
)
async def get_rank(
    program_id: str,
    advocate_id: str,
    who: Reader,
    rt: Rt,
    metric: domain.Metric = "referrals",
    period: PeriodQ = "all",
    unit: UnitQ = None,
) -> LeaderboardEntry:
    async with rt.transaction() as conn:
        return await handlers.advocate_rank(
            conn, who.tenant_id, program_id, advocate_id, metric, unit, period
        )


def _row(f: Figures) -> dict[str, Any]:
    row: dict[str, Any] = f.model_dump(exclude={"rates", "revenue", "reward_cost"})
    row.update({f"rate_{k}": v for k, v in f.rates.model_dump().items()})
    for r in f.revenue:
        for k in ("purchases", "gross_minor", "refunded_minor", "net_minor"):
            row[f"revenue_{k}_{r.currency}"] = getattr(r, k)
    for c in f.reward_cost:
        for k in ("issued", "voided", "clawed_back", "net", "cost_per_acquired_customer", "roi"):
            row[f"cost_{k}_{c.unit}"] = getattr(c, k)
    return row


def funnel_csv(out: FunnelOut) -> str:
    """One row per bucket, then the range's row (`from`, `to` the whole range)."""
    rows = [{"from": b.start, "to": b.end, **_row(b.figures)} for b in out.buckets]
    rows.append({"from": out.start, "to": out.end, **_row(out.totals)})
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()

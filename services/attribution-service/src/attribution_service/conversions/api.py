"""HTTP routes of conversions: submit one (also the hot path's, see front.py) and read one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Response

from attribution_service.conversions import handlers
from attribution_service.conversions.batch import ConversionWriter
from attribution_service.conversions.domain import code_key
from attribution_service.conversions.repository import ConversionFilter, ReferralFilter
from attribution_service.conversions.schemas import (
    ConversionIn,
    ConversionOut,
    CustomerOut,
    ReferralOut,
)
from attribution_service.refunds.api import refund_out
from attribution_service.refunds.schemas import RefundOut
from attribution_service.web import Auth, IdempotencyKey, Rt, settings
from servicekit import money
from servicekit.auth import Principal, requires
from servicekit.pagination import CreatedParams, Page, PageParams
from servicekit.runtime import Runtime

router = APIRouter(tags=["conversions"])


def _writer(rt: Runtime) -> ConversionWriter | None:
    return next((w for w in rt.workers if isinstance(w, ConversionWriter)), None)


def _fmt(minor: int | None, currency: str | None) -> str | None:
    return money.format_minor(minor, currency) if minor is not None and currency else None


def _out(row: Mapping[str, Any], refunds: list[asyncpg.Record] | None = None) -> ConversionOut:
    return ConversionOut(
        id=row["id"],
        type=row["type"],
        customer_id=row["customer_id"],
        status=row["status"],
        decision=row["decision"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        referral_id=row["referral_id"],
        evidence=row["evidence"],
        is_first_purchase=row["is_first_purchase"],
        sequence=row["sequence"],
        order_id=row["order_id"],
        subscription_id=row["subscription_id"],
        amount=_fmt(row["amount_minor"], row["currency"]),
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        refunded=_fmt(row["refunded_minor"], row["currency"]),
        occurred_at=row["occurred_at"],
        country=row.get("country"),
        decided_at=row["decided_at"],
        explanation=row["explanation"],
        refunds=[refund_out(r) for r in refunds or []],
    )


@router.post(
    "/v1/conversions",
    dependencies=[requires("conversions:write")],
    status_code=201,
    response_model=ConversionOut,
    responses={
        200: {"description": "the same conversion, already recorded"},
        202: {"description": "accepted; waiting for the click or code it names"},
    },
)
async def submit_conversion(
    body: ConversionIn,
    who: Auth,
    rt: Rt,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ConversionOut:
    out, response.status_code = await submit(rt, who, body, idempotency_key)
    return out


async def submit(
    rt: Runtime, who: Principal, body: ConversionIn, idempotency_key: str | None
) -> tuple[ConversionOut, int]:
    """The conversion and its status code (also the hot path's, see front.py)."""
    s = settings(rt)
    new = handlers.prepare_conversion(
        who.tenant_id, body, idempotency_key, hash_key=s.ip_hasher(), now=datetime.now(UTC)
    )
    writer = _writer(rt)
    if writer is not None and writer.accepting:
        # group commit: decided with the requests queued beside it, in one transaction
        row, created = await writer.submit(new)
    else:
        async with rt.transaction() as conn:
            row, created = await handlers.submit_prepared(
                conn, new, grace=timedelta(seconds=s.evidence_grace_seconds)
            )
    if not created:
        return _out(row), 200
    return _out(row), 202 if row["status"] == "pending" else 201


ConversionStatus = Literal["pending", "attributed", "review", "rejected", "organic"]
Id = Annotated[str | None, Query(max_length=100)]


@router.get(
    "/v1/conversions",
    dependencies=[requires("advocates:read")],
    response_model=Page[ConversionOut],
)
async def list_conversions(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    program_id: Id = None,
    advocate_id: Id = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    order_id: Annotated[str | None, Query(max_length=200, description="the lookup")] = None,
    code: Annotated[str | None, Query(max_length=64, description="the code it named")] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    status: ConversionStatus | None = None,
) -> Page[ConversionOut]:
    """Conversions, oldest first, each without its refunds (GET the conversion for those)."""
    f = ConversionFilter(
        program_id=program_id,
        advocate_id=advocate_id,
        customer_id=customer_id,
        order_id=order_id,
        code_key=code_key(code) if code is not None else None,
        type=type,
        status=status,
        created=created,
    )
    async with rt.transaction() as conn:
        rows = await handlers.conversion_page(conn, who.tenant_id, f, page)
    return page.answer(rows, _out)


def _referral_out(r: Mapping[str, Any]) -> ReferralOut:
    return ReferralOut(
        id=r["id"],
        program_id=r["program_id"],
        advocate_id=r["advocate_id"],
        customer_id=r["friend_customer_id"],
        evidence=r["evidence"],
        click_id=r["click_id"],
        created_at=r["created_at"],
    )


@router.get(
    "/v1/referrals",
    dependencies=[requires("advocates:read")],
    response_model=Page[ReferralOut],
    tags=["referrals"],
)
async def list_referrals(
    who: Auth,
    rt: Rt,
    page: PageParams,
    created: CreatedParams,
    program_id: Id = None,
    advocate_id: Id = None,
    customer_id: Annotated[
        str | None, Query(max_length=200, description="the referred customer")
    ] = None,
) -> Page[ReferralOut]:
    """Referrals (an advocate's friend, attributed), oldest first."""
    f = ReferralFilter(program_id, advocate_id, customer_id, created)
    async with rt.transaction() as conn:
        rows = await handlers.referral_page(conn, who.tenant_id, f, page)
    return page.answer(rows, _referral_out)


@router.get(
    "/v1/conversions/{conversion_id}/refunds",
    dependencies=[requires("advocates:read")],
    response_model=Page[RefundOut],
)
async def list_refunds(conversion_id: str, who: Auth, rt: Rt, page: PageParams) -> Page[RefundOut]:
    async with rt.transaction() as conn:
        rows = await handlers.refund_page(conn, who.tenant_id, conversion_id, page)
    return page.answer(rows, refund_out)


@router.get(
    "/v1/programs/{program_id}/customers/{customer_id}",
    dependencies=[requires("advocates:read")],
    response_model=CustomerOut,
    tags=["referrals"],
)
async def get_customer(
    program_id: str, customer_id: str, who: Auth, rt: Rt, page: PageParams
) -> CustomerOut:
    """One customer in one program: who referred them, whether they advocate, their conversions
    (paged as GET /v1/conversions)."""
    async with rt.transaction() as conn:
        view = await handlers.customer_view(conn, who.tenant_id, program_id, customer_id, page)
    return CustomerOut(
        program_id=program_id,
        customer_id=customer_id,
        referral=_referral_out(view.referral) if view.referral is not None else None,
        advocate_ids=view.advocate_ids,
        conversions=page.answer(view.conversions, _out),
    )


@router.get(
    "/v1/conversions/{conversion_id}",
    dependencies=[requires("advocates:read")],
    response_model=ConversionOut,
)
async def get_conversion(conversion_id: str, who: Auth, rt: Rt) -> ConversionOut:
    async with rt.transaction() as conn:
        row, refunds = await handlers.get_conversion(conn, who.tenant_id, conversion_id)
    return _out(row, refunds)

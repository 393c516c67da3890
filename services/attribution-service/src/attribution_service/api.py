"""HTTP routes: authenticate, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Header, Response

from attribution_service import handlers
from attribution_service.schemas import ConversionIn, ConversionOut
from servicekit import money
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]


def _out(row: asyncpg.Record) -> ConversionOut:
    amount = None
    if row["amount_minor"] is not None and row["currency"]:
        amount = money.format_minor(row["amount_minor"], row["currency"])
    return ConversionOut(
        id=row["id"],
        type=row["type"],
        customer_id=row["customer_id"],
        status=row["status"],
        program_id=row["program_id"],
        advocate_id=row["advocate_id"],
        referral_id=row["referral_id"],
        evidence=row["evidence"],
        is_first_purchase=row["is_first_purchase"],
        order_id=row["order_id"],
        amount=amount,
        currency=row["currency"],
        occurred_at=row["occurred_at"],
        explanation=row["explanation"],
    )


@router.post(
    "/v1/conversions",
    status_code=201,
    response_model=ConversionOut,
    tags=["conversions"],
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
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ConversionOut:
    async with rt.transaction() as conn:
        row, created = await handlers.submit_conversion(conn, who.tenant_id, body, idempotency_key)
    if not created:
        response.status_code = 200
    elif row["status"] == "pending":
        response.status_code = 202
    return _out(row)


@router.get("/v1/conversions/{conversion_id}", response_model=ConversionOut, tags=["conversions"])
async def get_conversion(conversion_id: str, who: Auth, rt: Rt) -> ConversionOut:
    async with rt.transaction() as conn:
        return _out(await handlers.get_conversion(conn, who.tenant_id, conversion_id))

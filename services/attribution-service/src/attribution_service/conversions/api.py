"""HTTP routes of conversions: submit one (also the hot path's, see front.py) and read one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, Response

from attribution_service.conversions import handlers
from attribution_service.conversions.batch import ConversionWriter
from attribution_service.conversions.schemas import ConversionIn, ConversionOut
from attribution_service.refunds.api import refund_out
from attribution_service.web import Auth, IdempotencyKey, Rt, settings
from servicekit import money
from servicekit.auth import Principal, requires
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


@router.get(
    "/v1/conversions/{conversion_id}",
    dependencies=[requires("advocates:read")],
    response_model=ConversionOut,
)
async def get_conversion(conversion_id: str, who: Auth, rt: Rt) -> ConversionOut:
    async with rt.transaction() as conn:
        row, refunds = await handlers.get_conversion(conn, who.tenant_id, conversion_id)
    return _out(row, refunds)

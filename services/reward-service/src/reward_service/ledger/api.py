"""Ledger routes: a holder's balances and statement, and the workspace's ledger verified."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from reward_service.ledger import domain, handlers
from reward_service.ledger.schemas import (
    AccountBalanceOut,
    BalanceOut,
    StatementLineOut,
    StatementOut,
)
from reward_service.units import display, format_minor, unit_kind
from reward_service.web import Auth, PathId, Rt
from servicekit.auth import requires

router = APIRouter()


def _balance_out(b: domain.Balance) -> BalanceOut:
    return BalanceOut(
        unit=b.unit,
        unit_kind=unit_kind(b.unit),
        purse=b.purse,
        available_minor=b.available_minor,
        pending_minor=b.pending_minor,
        available=format_minor(b.available_minor, b.unit),
        pending=format_minor(b.pending_minor, b.unit),
        available_display=display(b.available_minor, b.unit),
        pending_display=display(b.pending_minor, b.unit),
        debt_minor=b.debt_minor,
        in_payout_minor=b.in_payout_minor,
    )


def _line_out(line: domain.StatementLine) -> StatementLineOut:
    return StatementLineOut(
        seq=line.seq,
        transfer_id=str(line.transfer_id),
        leg=line.leg,
        account=line.account_kind,
        unit=line.unit,
        unit_kind=unit_kind(line.unit),
        purse=line.purse,
        amount_minor=line.amount,
        amount=format_minor(line.amount, line.unit),
        amount_display=display(line.amount, line.unit),
        cause=line.cause,
        reward_id=line.reward_id,
        conversion_id=line.conversion_id,
        created_at=line.created_at,
    )


@router.get(
    "/v1/accounts/{holder_id}/balance",
    dependencies=[requires("rewards:read")],
    response_model=AccountBalanceOut,
    tags=["ledger"],
)
async def get_balance(holder_id: PathId, who: Auth, rt: Rt) -> AccountBalanceOut:
    async with rt.transaction() as conn:
        balances = await handlers.get_balances(conn, who.tenant_id, holder_id)
    return AccountBalanceOut(holder_id=holder_id, balances=[_balance_out(b) for b in balances])


@router.get(
    "/v1/accounts/{holder_id}/statement",
    dependencies=[requires("rewards:read")],
    response_model=StatementOut,
    tags=["ledger"],
)
async def get_statement(
    holder_id: PathId,
    who: Auth,
    rt: Rt,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> StatementOut:
    async with rt.transaction() as conn:
        lines, next_seq = await handlers.get_statement(
            conn, who.tenant_id, holder_id, int(cursor or 0), limit
        )
    return StatementOut(
        holder_id=holder_id,
        entries=[_line_out(line) for line in lines],
        next_cursor=None if next_seq is None else str(next_seq),
    )


@router.get("/v1/admin/ledger/verify", dependencies=[requires("admin")], tags=["admin"])
async def verify_ledger(who: Auth, rt: Rt) -> JSONResponse:
    """The workspace's ledger checked end to end; 200 when sound, 409 listing what is not."""
    async with rt.transaction() as conn:
        report = await handlers.verify(conn, who.tenant_id)
    return JSONResponse(report.as_dict(), status_code=200 if report.ok else 409)

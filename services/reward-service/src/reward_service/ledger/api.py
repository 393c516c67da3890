"""Ledger routes: a holder's balances and statement, and the workspace's ledger verified."""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from reward_service.ledger import domain, handlers
from reward_service.ledger.repository import STATEMENT
from reward_service.ledger.schemas import (
    AccountBalanceOut,
    BalanceOut,
    StatementLineOut,
)
from reward_service.units import display, format_minor, unit_kind
from reward_service.web import Auth, PathId, Rt
from servicekit.auth import requires
from servicekit.pagination import Page, PageParams
from servicekit.sql import record_as

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


def _line_out(row: asyncpg.Record) -> StatementLineOut:
    line = record_as(domain.StatementLine, row)
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
    response_model=Page[StatementLineOut],
    tags=["ledger"],
)
async def get_statement(
    holder_id: PathId, who: Auth, rt: Rt, page: PageParams
) -> Page[StatementLineOut]:
    """The holder's entries in posting order (a transfer between two of the holder's accounts,
    a release, is a line on each)."""
    async with rt.transaction() as conn:
        rows = await handlers.get_statement(conn, who.tenant_id, holder_id, page)
    return page.answer(rows, _line_out, STATEMENT)


@router.get("/v1/admin/ledger/verify", dependencies=[requires("admin")], tags=["admin"])
async def verify_ledger(who: Auth, rt: Rt) -> JSONResponse:
    """The workspace's ledger checked end to end; 200 when sound, 409 listing what is not."""
    async with rt.transaction() as conn:
        report = await handlers.verify(conn, who.tenant_id)
    return JSONResponse(report.as_dict(), status_code=200 if report.ok else 409)

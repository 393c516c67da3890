"""HTTP routes: parse, authenticate, open the transaction, call a handler, shape the answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from reward_service import domain, handlers
from reward_service.schemas import (
    AccountBalanceOut,
    BalanceOut,
    MoneyOut,
    RewardRuleIn,
    RewardRuleOut,
)
from servicekit.app import runtime
from servicekit.auth import Principal, principal
from servicekit.runtime import Runtime

router = APIRouter()


def now(request: Request) -> datetime:
    """FastAPI dependency: the app's clock (injected, so tests move time instead of sleeping)."""
    clock: domain.Clock = request.app.state.clock
    return clock()


Auth = Annotated[Principal, Depends(principal)]
Rt = Annotated[Runtime, Depends(runtime)]
Now = Annotated[datetime, Depends(now)]
ProgramId = Annotated[str, Path(min_length=1, max_length=200)]
HolderId = Annotated[str, Path(min_length=1, max_length=200)]


def _definition(body: RewardRuleIn) -> domain.RuleDefinition:
    side = domain.SideReward(
        role="advocate",
        trigger=body.trigger,
        amount_minor=body.advocate_reward.amount_minor,
        unit=body.advocate_reward.currency,
    )
    return domain.RuleDefinition(hold_days=body.hold_days, rewards=(side,))


def _rule_out(rule: domain.RuleVersion) -> RewardRuleOut:
    side = rule.definition.side("advocate")
    assert side is not None  # the API writes only advocate-side rules so far
    return RewardRuleOut(
        id=rule.id,
        program_id=rule.program_id,
        version=rule.version,
        valid_from=rule.valid_from,
        trigger=side.trigger,
        hold_days=rule.definition.hold_days,
        advocate_reward=MoneyOut(
            amount_minor=side.amount_minor,
            currency=side.unit,
            amount=domain.format_minor(side.amount_minor, side.unit),
        ),
        created_at=rule.created_at,
    )


@router.put(
    "/v1/programs/{program_id}/reward-rule", response_model=RewardRuleOut, tags=["reward rules"]
)
async def put_reward_rule(
    program_id: ProgramId, body: RewardRuleIn, who: Auth, rt: Rt, at: Now
) -> RewardRuleOut:
    async with rt.transaction() as conn:
        rule = await handlers.put_reward_rule(
            conn, who.tenant_id, program_id, _definition(body), at
        )
    return _rule_out(rule)


@router.get(
    "/v1/programs/{program_id}/reward-rule", response_model=RewardRuleOut, tags=["reward rules"]
)
async def get_reward_rule(program_id: ProgramId, who: Auth, rt: Rt, at: Now) -> RewardRuleOut:
    async with rt.transaction() as conn:
        return _rule_out(await handlers.get_reward_rule(conn, who.tenant_id, program_id, at))


@router.get("/v1/accounts/{holder_id}/balance", response_model=AccountBalanceOut, tags=["ledger"])
async def get_balance(holder_id: HolderId, who: Auth, rt: Rt) -> AccountBalanceOut:
    async with rt.transaction() as conn:
        balances = await handlers.get_balances(conn, who.tenant_id, holder_id)
    return AccountBalanceOut(
        holder_id=holder_id,
        balances=[
            BalanceOut(
                unit=b.unit,
                available_minor=b.available_minor,
                pending_minor=b.pending_minor,
                available=domain.format_minor(b.available_minor, b.unit),
                pending=domain.format_minor(b.pending_minor, b.unit),
            )
            for b in balances
        ],
    )

"""Reward-rule routes: a body is checked and turned into a domain.RuleDefinition by
rules/body.py, the answer shaped here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from reward_service import units
from reward_service.rules import body as body_rules
from reward_service.rules import domain, handlers
from reward_service.rules.schemas import (
    MoneyOut,
    RewardRuleIn,
    RewardRuleOut,
)
from reward_service.web import Auth, Now, PathId, Rt, program_heard_of
from servicekit.auth import requires

router = APIRouter(tags=["reward rules"])


def _side_out(side: domain.SideReward | None) -> dict[str, Any] | None:
    if side is None:
        return None
    out = domain.side_to_json(side)
    out.pop("role", None)
    return out


def _variant_out(v: domain.Variant) -> dict[str, Any]:
    doc = domain.variant_to_json(v)
    sides = {s.role: _side_out(s) for s in v.rewards}
    return {
        "segment": v.segment,
        "order": v.order,
        "advocate": sides.get("advocate"),
        "friend": sides.get("friend"),
        "milestones": doc["milestones"],
        "caps": doc["caps"],
    }


def _rule_out(rule: domain.RuleVersion) -> RewardRuleOut:
    d = rule.definition
    doc = domain.definition_to_json(d)
    advocate = d.side("advocate")
    legacy = None
    if (
        advocate is not None
        and advocate.amount.fixed is not None
        and units.is_currency(advocate.amount.unit)
    ):
        legacy = MoneyOut(
            amount_minor=advocate.amount.fixed,
            currency=advocate.amount.unit,
            amount=units.format_minor(advocate.amount.fixed, advocate.amount.unit),
        )
    return RewardRuleOut(
        id=rule.id,
        program_id=rule.program_id,
        version=rule.version,
        valid_from=rule.valid_from,
        hold_days=d.hold_days,
        clawback=d.clawback,
        advocate=_side_out(advocate),
        friend=_side_out(d.side("friend")),
        milestones=doc["milestones"],
        caps=doc["caps"],
        budget=doc["budget"],
        variants=[_variant_out(v) for v in d.variants],
        advocate_reward=legacy,
        trigger=advocate.trigger if advocate is not None else None,
        created_at=rule.created_at,
    )


@router.put(
    "/v1/programs/{program_id}/reward-rule",
    dependencies=[requires("programs:write")],
    response_model=RewardRuleOut,
)
async def put_reward_rule(
    program_id: PathId, body: RewardRuleIn, who: Auth, rt: Rt, at: Now
) -> RewardRuleOut:
    definition = body_rules.definition(body)
    await program_heard_of(rt, who.tenant_id, program_id)
    async with rt.transaction() as conn:
        rule = await handlers.put_reward_rule(conn, who.tenant_id, program_id, definition, at)
        promoted = await handlers.promoted_from(conn, who.tenant_id, rule)
    return _rule_out(rule).model_copy(update={"promoted_from": promoted})


@router.get(
    "/v1/programs/{program_id}/reward-rule",
    dependencies=[requires("programs:read")],
    response_model=RewardRuleOut,
)
async def get_reward_rule(program_id: PathId, who: Auth, rt: Rt, at: Now) -> RewardRuleOut:
    async with rt.transaction() as conn:
        rule = await handlers.get_reward_rule(conn, who.tenant_id, program_id, at)
        promoted = await handlers.promoted_from(conn, who.tenant_id, rule)
    return _rule_out(rule).model_copy(update={"promoted_from": promoted})

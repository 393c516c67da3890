"""Use cases of reading rewards and cap usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from reward_service.earning import repository as earning
from reward_service.earning.domain import Usage, period_key
from reward_service.rewards import repository
from reward_service.rules import domain as rules
from reward_service.rules.handlers import get_reward_rule
from servicekit.pagination import PageQuery


async def reward_page(
    conn: asyncpg.Connection, tenant_id: str, f: repository.RewardFilter, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.reward_page(conn, tenant_id, f, page)


@dataclass(frozen=True)
class CapUse:
    cap: rules.Cap
    key: str
    unit: str
    used: Usage


@dataclass(frozen=True)
class CapReport:
    rule: rules.RuleVersion
    caps: list[CapUse]
    budget_spent: int | None


async def cap_usage(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str | None,
    now: datetime,
) -> CapReport:
    """The caps of the rule in force with what the advocate has used of each in the period
    `now` is in (the advocate side's unit, as earning counts them), and the program's spend
    against its budget. 404 for a program without a rule."""
    rule = await get_reward_rule(conn, tenant_id, program_id, now)
    d = rule.definition
    side = d.side("advocate")
    caps: list[CapUse] = []
    if advocate_id is not None and side is not None and d.caps:
        keys = {c.period: period_key(c.period, now) for c in d.caps}
        used = await earning.cap_usage(conn, tenant_id, program_id, advocate_id, side.unit, keys)
        caps = [CapUse(c, keys[c.period], side.unit, used[c.period]) for c in d.caps]
    spent = None
    if d.budget is not None:
        spent = await repository.program_spent(conn, tenant_id, program_id, d.budget.unit)
    return CapReport(rule, caps, spent)

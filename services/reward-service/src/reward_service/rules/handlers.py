"""Reward-rule use cases. They take the edge's connection and never commit."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from reward_service.coupons import repository as coupons
from reward_service.rules import domain, repository
from servicekit.ids import new_id
from servicekit.problems import InvalidInput, NotFound


async def put_reward_rule(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    definition: domain.RuleDefinition,
    now: datetime,
) -> domain.RuleVersion:
    """A changed rule becomes a new version in force from now; the same rule again returns the
    current version unchanged, so a retried PUT adds no version."""
    for side in definition.rewards:
        if side.coupon_pool_id is not None and not await coupons.coupon_pool_exists(
            conn, tenant_id, program_id, side.coupon_pool_id
        ):
            raise InvalidInput(
                f"coupon pool '{side.coupon_pool_id}' does not exist in program '{program_id}'",
                field=f"/{side.role}/coupon_pool_id",
            )
    await repository.lock_program_rules(conn, tenant_id, program_id)
    latest = await repository.latest_rule(conn, tenant_id, program_id)
    if latest is not None and latest.definition == definition:
        return latest
    number, valid_from = domain.next_version(latest, now)
    return await repository.insert_rule_version(
        conn,
        rule_id=new_id("rrv"),
        tenant_id=tenant_id,
        program_id=program_id,
        version=number,
        valid_from=valid_from,
        definition=definition,
    )


async def get_reward_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, now: datetime
) -> domain.RuleVersion:
    rule = await repository.rule_in_force(conn, tenant_id, program_id, now)
    if rule is None:
        raise NotFound(f"program '{program_id}' has no reward rule", field="/program_id")
    return rule

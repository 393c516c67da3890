"""Reward-rule use cases. They take the edge's connection and never commit."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from referral_events import CloudEvent
from referral_events.contracts import link as ev
from reward_service.coupons import repository as coupons
from reward_service.rules import domain, repository
from servicekit import audience
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
    await _check_variants(conn, tenant_id, program_id, definition.variants)
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


async def _check_variants(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, variants: tuple[domain.Variant, ...]
) -> None:
    """Each variant names a segment of the program (as link-service published it), and two
    variants one advocate could both match are ordered (each an `order`, not the same)."""
    if not variants:
        return
    known = {s.name: s for s in await repository.program_segments(conn, tenant_id, program_id)}
    for i, v in enumerate(variants):
        if v.segment not in known:
            raise InvalidInput(
                f"program '{program_id}' has no segment '{v.segment}' (segments are defined"
                " on link-service, PUT /v1/programs/{id}/audience, and reach this service a"
                " moment later)",
                field=f"/variants/{i}/segment",
            )
    for j, b in enumerate(variants):
        for i, a in enumerate(variants[:j]):
            overlap = audience.could_overlap(known[a.segment].condition, known[b.segment].condition)
            if overlap and (a.order is None or b.order is None or a.order == b.order):
                raise InvalidInput(
                    f"variants {i} ('{a.segment}') and {j} ('{b.segment}') could both match one"
                    " advocate: give each a different order",
                    field=f"/variants/{j}/order",
                )


async def segments_at(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, advocate_id: str, at: datetime
) -> frozenset[str]:
    """The program's segments the advocate was in at `at`: their attribute changes in force by
    then folded by effective time (servicekit.audience.state_at, as link-service folds them)."""
    changes = await repository.attribute_changes(conn, tenant_id, advocate_id, at)
    attrs = audience.state_at(changes, at)
    return audience.matching(await repository.program_segments(conn, tenant_id, program_id), attrs)


# --- consumed: link-service's segments and attribute changes -----------------------------------


async def on_audience_changed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.ProgramAudienceChanged
) -> None:
    await repository.upsert_segments(
        conn, event.tenantid, payload.program_id, payload.segments, payload.version
    )


async def on_attributes_changed(
    conn: asyncpg.Connection, event: CloudEvent, payload: ev.AdvocateAttributesChanged
) -> None:
    """Kept as they come; a change that arrives after a conversion it predates does not
    re-decide that conversion's reward (see README, "Segments")."""
    await repository.insert_attribute_change(
        conn,
        event.tenantid,
        payload.program_id,
        payload.advocate_id,
        audience.Change(payload.change, payload.effective_at, payload.changes),
    )


async def get_reward_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, now: datetime
) -> domain.RuleVersion:
    rule = await repository.rule_in_force(conn, tenant_id, program_id, now)
    if rule is None:
        raise NotFound(f"program '{program_id}' has no reward rule", field="/program_id")
    return rule

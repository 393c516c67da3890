"""Reward-rule use cases. They take the edge's connection and never commit."""

from __future__ import annotations

import logging
from datetime import datetime

import asyncpg
from pydantic import ValidationError

from referral_events import CloudEvent
from referral_events.contracts import attribution as at
from referral_events.contracts import link as ev
from reward_service.coupons import repository as coupons
from reward_service.rules import body, domain, repository
from reward_service.rules.schemas import RewardRuleIn
from servicekit import audience
from servicekit.ids import new_id
from servicekit.problems import InvalidInput, NotFound, pointer

log = logging.getLogger(__name__)


async def put_reward_rule(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    definition: domain.RuleDefinition,
    now: datetime,
) -> domain.RuleVersion:
    """A changed rule becomes a new version in force from now; the same rule again returns the
    current version unchanged, so a retried PUT adds no version."""
    rule, _ = await _put_rule(conn, tenant_id, program_id, definition, now)
    return rule


async def _put_rule(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    definition: domain.RuleDefinition,
    now: datetime,
) -> tuple[domain.RuleVersion, bool]:
    """put_reward_rule, and whether it wrote a new version."""
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
        return latest, False
    number, valid_from = domain.next_version(latest, now)
    written = await repository.insert_rule_version(
        conn,
        rule_id=new_id("rrv"),
        tenant_id=tenant_id,
        program_id=program_id,
        version=number,
        valid_from=valid_from,
        definition=definition,
    )
    return written, True


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


async def promoted_from(
    conn: asyncpg.Connection, tenant_id: str, rule: domain.RuleVersion
) -> dict[str, object] | None:
    """The experiment whose winner wrote this version, if one did."""
    row = await repository.promotion_of_version(conn, tenant_id, rule.id)
    return dict(row) if row is not None else None


async def get_reward_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, now: datetime
) -> domain.RuleVersion:
    rule = await repository.rule_in_force(conn, tenant_id, program_id, now)
    if rule is None:
        raise NotFound(f"program '{program_id}' has no reward rule", field="/program_id")
    return rule


# --- consumed: an experiment's winner promoted (attribution's reward_rule.promoted.v1) ---------


async def on_rule_promoted(
    conn: asyncpg.Connection, event: CloudEvent, payload: at.RewardRulePromoted, now: datetime
) -> None:
    """The winner's config becomes the program's rule: parsed and checked as a PUT body is
    (rules/body.py, the same put_reward_rule), a new version in force from `now`, so every
    conversion occurring from then on is rewarded by it. Recorded in rule_promotions, once per
    experiment whatever is redelivered: `applied` (the version written), `unchanged` (the rule was
    that already) or `refused` (the config is not a valid rule: the rule stays as it was, and the
    problem is kept with its field)."""
    tenant = event.tenantid
    if await repository.promotion_recorded(conn, tenant, payload.experiment_id):
        return
    outcome = "refused"
    version_id: str | None = None
    detail: str | None = None
    field: str | None = None
    try:
        definition = body.definition(RewardRuleIn.model_validate(payload.rule))
        rule, written = await _put_rule(conn, tenant, payload.program_id, definition, now)
        outcome, version_id = ("applied" if written else "unchanged"), rule.id
    except InvalidInput as exc:
        detail, field = exc.detail, exc.field
    except ValidationError as exc:
        first = exc.errors()[0]
        detail, field = first["msg"], pointer(tuple(first["loc"]))
    if outcome == "refused":
        log.warning(
            "promoted variant is not a valid reward rule; the rule stays",
            extra={"experiment_id": payload.experiment_id, "detail": detail, "field": field},
        )
    await repository.insert_promotion(
        conn,
        tenant_id=tenant,
        experiment_id=payload.experiment_id,
        program_id=payload.program_id,
        variant=payload.variant,
        event_id=event.id,
        forced=payload.forced,
        outcome=outcome,
        rule_version_id=version_id,
        detail=detail,
        field=field,
        promoted_at=payload.promoted_at,
    )

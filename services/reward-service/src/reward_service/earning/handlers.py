"""Earning use cases: an attributed conversion issues rewards (as far as caps, budget and coupon
stock allow), held rewards are released when their hold ends, a refund voids or claws back.
Each takes the caller's connection (the edge's transaction: a consumed event, a release batch),
changes state through the repositories, posts the ledger's transfers and enqueues the implied
events in one outbox statement at the end. None of them commits."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

import asyncpg

from referral_events import CloudEvent
from referral_events.contracts.attribution import ConversionAttributed, ConversionRefunded
from referral_events.outbox import OutboxRow, enqueue_rows
from reward_service.clock import as_utc, utc_now
from reward_service.coupons import domain as coupon_stock
from reward_service.coupons import repository as coupons
from reward_service.earning import domain, events, postings, repository
from reward_service.ledger import repository as ledger
from reward_service.metrics import REWARDS_CAPPED, REWARDS_ISSUED
from reward_service.rules import handlers as rule_handlers
from reward_service.rules import repository as rules
from reward_service.rules.domain import Cap, Milestone, Period, RuleVersion

log = logging.getLogger(__name__)


def conversion_of(event: CloudEvent, payload: ConversionAttributed) -> domain.Conversion:
    return domain.Conversion(
        tenant_id=event.tenantid,
        conversion_id=payload.conversion_id,
        referral_id=payload.referral_id,
        program_id=payload.program_id,
        advocate_id=payload.advocate_id,
        friend_customer_id=payload.friend_customer_id,
        conversion_type=payload.conversion_type,
        is_first_purchase=payload.is_first_purchase,
        occurred_at=as_utc(payload.occurred_at),
        order_amount_minor=payload.amount_minor,
        order_currency=payload.currency,
        sequence=payload.sequence,
        custom_type=payload.custom_type,
    )


def refund_of(event: CloudEvent, payload: ConversionRefunded) -> domain.Refund:
    return domain.Refund(
        tenant_id=event.tenantid,
        refund_id=payload.refund_id,
        conversion_id=payload.conversion_id,
        amount_minor=payload.amount_minor,
        refunded_total_minor=payload.refunded_total_minor,
        full_refund=payload.full,
        refunded_at=as_utc(payload.refunded_at),
    )


# --- issuing ------------------------------------------------------------------------------------


async def on_conversion_attributed(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ConversionAttributed,
    now: datetime | None = None,
) -> list[domain.Reward]:
    """Rewards an attributed conversion under its tenant's rule in force at occurred_at. The
    envelope's tenant selects the rule, so one tenant's events never reach another's rules."""
    conversion = conversion_of(event, payload)
    rule = await rules.rule_in_force(
        conn, conversion.tenant_id, conversion.program_id, conversion.occurred_at
    )
    if rule is None:
        log.info(
            "no reward rule for program %s at %s; conversion %s earns nothing",
            conversion.program_id,
            conversion.occurred_at,
            conversion.conversion_id,
        )
        return []
    if rule.definition.variants:
        # The variant of the segments the advocate was in when the conversion happened.
        matched = await rule_handlers.segments_at(
            conn,
            conversion.tenant_id,
            conversion.program_id,
            conversion.advocate_id,
            conversion.occurred_at,
        )
        definition, segment = rule.definition.for_segments(matched)
        rule = dataclasses.replace(rule, definition=definition, segment=segment)
    return await reward_conversion(conn, rule, conversion, event.id, now or utc_now())


async def reward_conversion(
    conn: asyncpg.Connection,
    rule: RuleVersion,
    conversion: domain.Conversion,
    source_event_id: str,
    now: datetime,
) -> list[domain.Reward]:
    """Earns what each matching side asks for, as far as caps, budget and coupon stock allow.
    Everything that reads-then-raises the advocate's count, cap usage and the program's spend
    runs under the advocate's row lock, so concurrent conversions can't both take the last room
    under a cap (events of one advocate are ordered on one partition, but replicas and replays
    need not be)."""
    sides = domain.matching_sides(rule, conversion)
    if not sides:
        return []
    tenant, program, advocate = conversion.tenant_id, conversion.program_id, conversion.advocate_id
    await repository.lock_advocate(conn, tenant, program, advocate)
    ids = {
        s.role: domain.reward_id(tenant, conversion.conversion_id, rule.id, s.role) for s in sides
    }
    done = await repository.existing_rewards(conn, list(ids.values()))
    if len(done) == len(ids):
        log.info("conversion %s was already rewarded", conversion.conversion_id)
        return []

    number: int | None = None
    new_referral = False
    if any(s.role == "advocate" for s in sides):
        number = await repository.referral_number(conn, tenant, program, conversion.referral_id)
        if number is None:
            number = await repository.record_successful_referral(conn, conversion)
            new_referral = True

    out: list[OutboxRow] = []
    earned: list[domain.Reward] = []
    for candidate in domain.candidates(rule, conversion, number):
        if ids[candidate.role] in done:
            continue
        earned.append(await _earn(conn, rule, conversion, candidate, source_event_id, now, out))
    if new_referral and number is not None:
        for milestone in domain.milestones_reached(rule, number):
            bonus = await _earn_milestone(
                conn, rule, conversion, milestone, number, source_event_id, now, out
            )
            if bonus is not None:
                earned.append(bonus)
    await _settle_debts(conn, [r for r in earned if r.state == "available"])
    # A refund that arrived first (reordered delivery, or refunded while the conversion waited
    # for review) was recorded with no reward to take from: it applies now, so the reward
    # follows the net amount whatever the order.
    refund = await repository.latest_refund(conn, tenant, conversion.conversion_id)
    if refund is not None and earned:
        out.extend(await _apply_refund(conn, refund, now))
    await enqueue_rows(conn, out)
    return earned


async def _grant(
    conn: asyncpg.Connection,
    rule: RuleVersion,
    conversion: domain.Conversion,
    requested: int,
    unit: str,
    caps: tuple[Cap, ...],
) -> tuple[domain.Grant, dict[Period, str]]:
    """What `caps` and the program's budget grant of `requested`, and the period keys of the
    caps the grant counts against."""
    tenant, program = conversion.tenant_id, conversion.program_id
    keys = {c.period: domain.period_key(c.period, conversion.occurred_at) for c in caps}
    usage = (
        await repository.cap_usage(conn, tenant, program, conversion.advocate_id, unit, keys)
        if caps
        else {}
    )
    budget = rule.definition.budget
    remaining: int | None = None
    if budget is not None and budget.unit == unit:
        remaining = budget.amount - await repository.program_spent(conn, tenant, program, unit)
    return domain.apply_caps(requested, caps, usage, remaining), keys


async def _earn(
    conn: asyncpg.Connection,
    rule: RuleVersion,
    conversion: domain.Conversion,
    candidate: domain.Candidate,
    source_event_id: str,
    now: datetime,
    out: list[OutboxRow],
) -> domain.Reward:
    side = candidate.side
    code: str | None = None
    keys: dict[Period, str] = {}
    if side.kind == "coupon":
        assert side.coupon_pool_id is not None
        code = await coupons.pick_coupon(conn, side.coupon_pool_id)
        grant = domain.Grant(1) if code else domain.Grant(0, "coupon_pool_empty")
    else:
        # Caps limit the advocate side only.
        caps = rule.definition.caps if candidate.role == "advocate" else ()
        grant, keys = await _grant(
            conn, rule, conversion, candidate.requested, candidate.unit, caps
        )
    reward = domain.build_reward(rule, conversion, candidate, grant)
    await repository.insert_reward(conn, reward, source_event_id, now)
    await _book(conn, reward, grant, keys, out)
    if side.kind == "coupon" and side.coupon_pool_id is not None:
        out.extend(await _hand_out(conn, reward, side.coupon_pool_id, code, now))
    return reward


async def _hand_out(
    conn: asyncpg.Connection,
    reward: domain.Reward,
    pool_id: str,
    code: str | None,
    now: datetime,
) -> list[OutboxRow]:
    """Gives the picked code to the reward; the merchant hears when the pool runs low, and of
    each friend it had no code left for."""
    if code is None:
        return [events.coupon_pool_low(reward, pool_id, coupon_stock.EMPTY)]
    stock = await coupons.assign_coupon(conn, pool_id, code, reward.id, reward.holder_id, now)
    rows = [events.coupon_allocated(reward, pool_id, code)]
    if stock.low:
        rows.append(events.coupon_pool_low(reward, pool_id, stock))
    return rows


async def _earn_milestone(
    conn: asyncpg.Connection,
    rule: RuleVersion,
    conversion: domain.Conversion,
    milestone: Milestone,
    number: int,
    source_event_id: str,
    now: datetime,
    out: list[OutboxRow],
) -> domain.Reward | None:
    rid = domain.milestone_reward_id(
        conversion.tenant_id, conversion.program_id, conversion.advocate_id, milestone.referrals
    )
    if await repository.existing_rewards(conn, [rid]):
        return None
    # Caps limit referral rewards; a milestone bonus answers to the program's budget only.
    grant, keys = await _grant(conn, rule, conversion, milestone.amount, milestone.unit, ())
    reward = domain.build_milestone_reward(rule, conversion, milestone, grant)
    await repository.insert_reward(conn, reward, source_event_id, now)
    out.append(events.milestone_reached(reward, number, milestone.referrals))
    await _book(conn, reward, grant, keys, out)
    return reward


async def _book(
    conn: asyncpg.Connection,
    reward: domain.Reward,
    grant: domain.Grant,
    keys: dict[Period, str],
    out: list[OutboxRow],
) -> None:
    """Posts the earn transfer, counts the grant against caps and spend, emits the events."""
    if reward.amount > 0:
        REWARDS_ISSUED.labels(role=reward.role, kind=reward.kind).inc()
        if reward.on_ledger:
            await ledger.post_transfers(conn, [postings.earn_transfer(reward)])
            await repository.add_program_spend(conn, reward, reward.amount)
        if keys:
            await repository.add_cap_usage(
                conn, reward, {keys[p]: u for p, u in grant.usage_delta.items()}
            )
        if reward.state == "pending":
            out.append(events.reward_pending(reward))
        else:
            out.append(events.reward_available(reward))
    if grant.capped:
        REWARDS_CAPPED.labels(role=reward.role, reason=grant.reason or "capped").inc()
        out.append(events.reward_capped(reward, grant))


async def _settle_debts(conn: asyncpg.Connection, available: list[domain.Reward]) -> None:
    """Newly available rewards first pay off what the holder owes from earlier claw-backs."""
    on_ledger = [r for r in available if r.holds_value]
    if not on_ledger:
        return
    owed = await ledger.holders_in_debt(
        conn, [postings.holder_account(r, "debt") for r in on_ledger]
    )
    if not owed:
        return
    settles = []
    for reward in on_ledger:
        debt_id = postings.holder_account(reward, "debt").id
        amount = min(owed.get(debt_id, 0), reward.outstanding)
        if amount > 0:
            settles.append(postings.settle_transfer(reward, amount))
            owed[debt_id] -= amount
    await ledger.post_transfers(conn, settles)


# --- release ------------------------------------------------------------------------------------


async def release_due_rewards(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """Moves up to `limit` rewards whose hold ended by `now` from pending to available, set-based:
    one locking read, one posting of all their transfers, one update, one outbox insert."""
    due = await repository.lock_due_rewards(conn, now, limit)
    if not due:
        return 0
    await ledger.post_transfers(conn, [postings.release_transfer(r) for r in due if r.holds_value])
    await repository.mark_available(conn, [r.id for r in due], now)
    out = [events.reward_available(reward) for reward in due]
    await _settle_debts(conn, due)
    await enqueue_rows(conn, out)
    return len(due)


# --- refunds ------------------------------------------------------------------------------------


async def on_conversion_refunded(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ConversionRefunded,
    now: datetime | None = None,
) -> None:
    """A refund inside the hold voids (part of) the pending reward; after release it claws back
    per the rule's policy. Applied once per refund id, whatever event id carries it."""
    now = now or utc_now()
    refund = refund_of(event, payload)
    if not await repository.insert_refund(conn, refund):
        log.info("refund %s was already applied", refund.refund_id)
        return
    tenant = refund.tenant_id
    await repository.lock_advocate(conn, tenant, payload.program_id, payload.advocate_id)
    await enqueue_rows(conn, await _apply_refund(conn, refund, now))


async def _apply_refund(
    conn: asyncpg.Connection, refund: domain.Refund, now: datetime
) -> list[OutboxRow]:
    """Takes back from the conversion's rewards what `refund` (a running total) leaves them;
    the caller holds the advocate's lock."""
    out: list[OutboxRow] = []
    for reward in await repository.lock_conversion_rewards(
        conn, refund.tenant_id, refund.conversion_id
    ):
        if reward.state not in ("pending", "available") or not reward.on_ledger:
            continue
        reduction = domain.refund_reduction(reward, refund.refunded_total_minor, refund.full_refund)
        if reduction <= 0:
            continue
        out.append(await _take_back(conn, reward, reduction, refund.refund_id, now))
    return out


async def _take_back(
    conn: asyncpg.Connection,
    reward: domain.Reward,
    amount: int,
    refund_id: str,
    now: datetime,
) -> OutboxRow:
    """Voids `amount` of a pending reward, or claws it back from an available one; returns the
    event saying which."""
    if reward.state == "pending":
        await ledger.post_transfers(conn, [postings.void_transfer(reward, amount, refund_id)])
        await repository.take_back(conn, reward.id, amount, 0, now)
        row = events.reward_voided(reward, amount, refund_id, now)
    else:
        available = await ledger.lock_balance(conn, postings.holder_account(reward, "available"))
        taken, debt = domain.clawback_split(reward.clawback, amount, available)
        await ledger.post_transfers(
            conn, postings.clawback_transfers(reward, taken, debt, refund_id)
        )
        await repository.take_back(conn, reward.id, 0, amount, now)
        row = events.reward_clawed_back(reward, amount, debt, refund_id, now)
    # What was taken back was never spent: it returns to the budget and the advocate's caps.
    await repository.add_program_spend(conn, reward, -amount)
    returned = domain.usage_returned(reward, amount)
    if returned:
        await repository.add_cap_usage(conn, reward, returned)
    return row

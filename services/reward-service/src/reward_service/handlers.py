"""Use cases of reward-service. Each takes the caller's connection (the edge's transaction:
an HTTP request, a consumed event, a release batch), changes state through the repository and
emits the implied events through the outbox. None of them commits.

Redemptions and payouts are in payouts.py; this module holds rules, earning, release, refunds,
balances, statements and verify."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from referral_events import CloudEvent
from referral_events.contracts import reward as ev
from referral_events.contracts.attribution import ConversionAttributed, ConversionRefunded
from referral_events.envelope import EventPayload
from referral_events.outbox import OutboxRow, enqueue_rows
from reward_service import domain, ledger, repository
from reward_service.events import EVENTS
from reward_service.metrics import REWARDS_CAPPED, REWARDS_ISSUED
from servicekit.ids import new_id
from servicekit.problems import InvalidInput, NotFound

log = logging.getLogger(__name__)


# --- rules --------------------------------------------------------------------------------------


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
        if side.coupon_pool_id is not None and not await repository.coupon_pool_exists(
            conn, tenant_id, program_id, side.coupon_pool_id
        ):
            raise InvalidInput(
                f"coupon pool '{side.coupon_pool_id}' does not exist in program '{program_id}'",
                field=f"{side.role}.coupon_pool_id",
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
        raise NotFound(f"program '{program_id}' has no reward rule", field="program_id")
    return rule


# --- earning ------------------------------------------------------------------------------------


class _Outbox:
    """Events of one transaction, enqueued together at the end (one statement)."""

    def __init__(self) -> None:
        self.events: list[OutboxRow] = []

    def add(self, payload: EventPayload, tenant_id: str, key: str, event_id: str) -> None:
        self.events.append(EVENTS.row(payload, tenant_id=tenant_id, key=key, event_id=event_id))

    async def flush(self, conn: asyncpg.Connection) -> None:
        await enqueue_rows(conn, self.events)
        self.events = []


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
        occurred_at=domain.as_utc(payload.occurred_at),
        order_amount_minor=payload.amount_minor,
        order_currency=payload.currency,
        sequence=payload.sequence,
        custom_type=payload.custom_type,
    )


async def on_conversion_attributed(
    conn: asyncpg.Connection,
    event: CloudEvent,
    payload: ConversionAttributed,
    now: datetime | None = None,
) -> list[domain.Reward]:
    """Rewards an attributed conversion under its tenant's rule in force at occurred_at. The
    envelope's tenant selects the rule, so one tenant's events never reach another's rules."""
    conversion = conversion_of(event, payload)
    rule = await repository.rule_in_force(
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
    return await reward_conversion(conn, rule, conversion, event.id, now or domain.utc_now())


async def reward_conversion(
    conn: asyncpg.Connection,
    rule: domain.RuleVersion,
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
            number = await repository.record_successful_referral(
                conn, tenant, program, advocate, conversion.referral_id, conversion.conversion_id
            )
            new_referral = True

    out = _Outbox()
    earned: list[domain.Reward] = []
    for candidate in domain.candidates(rule, conversion, number):
        if ids[candidate.role] in done:
            continue
        reward = await _earn(conn, rule, conversion, candidate, source_event_id, now, out)
        earned.append(reward)
    if new_referral and number is not None:
        for milestone in domain.milestones_reached(rule, number):
            bonus = await _earn_milestone(
                conn, rule, conversion, milestone, number, source_event_id, now, out
            )
            if bonus is not None:
                earned.append(bonus)
    await _settle_debts(conn, [r for r in earned if r.state == "available"])
    await out.flush(conn)
    return earned


async def _grant(
    conn: asyncpg.Connection,
    rule: domain.RuleVersion,
    conversion: domain.Conversion,
    role: domain.Role,
    requested: int,
    unit: str,
    with_caps: bool,
) -> tuple[domain.Grant, dict[domain.Period, str]]:
    tenant, program = conversion.tenant_id, conversion.program_id
    caps = rule.definition.caps if with_caps and role == "advocate" else ()
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
    rule: domain.RuleVersion,
    conversion: domain.Conversion,
    candidate: domain.Candidate,
    source_event_id: str,
    now: datetime,
    out: _Outbox,
) -> domain.Reward:
    coupon: str | None = None
    pool_id = candidate.side.coupon_pool_id
    if candidate.side.kind == "coupon":
        assert pool_id is not None
        coupon = await repository.pick_coupon(conn, pool_id)
        grant = domain.Grant(1) if coupon else domain.Grant(0, "coupon_pool_empty")
        keys: dict[domain.Period, str] = {}
    else:
        grant, keys = await _grant(
            conn, rule, conversion, candidate.role, candidate.requested, candidate.unit, True
        )
    reward = domain.build_reward(rule, conversion, candidate, grant)
    await repository.insert_reward(conn, reward, source_event_id, now)
    await _book(conn, reward, grant, keys, out)
    if coupon is not None and pool_id is not None:
        remaining, threshold = await repository.assign_coupon(
            conn, pool_id, coupon, reward.id, reward.holder_id, now
        )
        out.add(
            ev.CouponAllocated(
                coupon_code=coupon,
                pool_id=pool_id,
                reward_id=reward.id,
                program_id=reward.program_id,
                advocate_id=reward.advocate_id,
                holder_id=reward.holder_id,
                role=reward.role,
                conversion_id=reward.conversion_id,
            ),
            reward.tenant_id,
            reward.advocate_id,
            domain.reward_event_id(reward.id, ev.CouponAllocated.TYPE),
        )
        if remaining <= threshold:
            _pool_low(out, reward, pool_id, remaining, threshold)
    elif candidate.side.kind == "coupon" and pool_id is not None:
        _pool_low(out, reward, pool_id, 0, 0)
    return reward


def _pool_low(
    out: _Outbox, reward: domain.Reward, pool_id: str, remaining: int, threshold: int
) -> None:
    # One event per pool and remaining count: the merchant hears of each code handed out
    # below the threshold (and of the pool running dry), never twice for the same count.
    out.add(
        ev.CouponPoolLow(
            pool_id=pool_id, program_id=reward.program_id, remaining=remaining, threshold=threshold
        ),
        reward.tenant_id,
        reward.advocate_id,
        domain.event_id("coupon_pool.low", reward.tenant_id, pool_id, str(remaining), reward.id),
    )


async def _earn_milestone(
    conn: asyncpg.Connection,
    rule: domain.RuleVersion,
    conversion: domain.Conversion,
    milestone: domain.Milestone,
    number: int,
    source_event_id: str,
    now: datetime,
    out: _Outbox,
) -> domain.Reward | None:
    rid = domain.milestone_reward_id(
        conversion.tenant_id, conversion.program_id, conversion.advocate_id, milestone.referrals
    )
    if await repository.existing_rewards(conn, [rid]):
        return None
    grant, keys = await _grant(
        conn, rule, conversion, "advocate", milestone.amount, milestone.unit, False
    )
    reward = domain.build_milestone_reward(rule, conversion, milestone, grant)
    await repository.insert_reward(conn, reward, source_event_id, now)
    out.add(
        ev.MilestoneReached(
            program_id=reward.program_id,
            advocate_id=reward.advocate_id,
            holder_id=reward.holder_id,
            referral_count=number,
            milestone=milestone.referrals,
            reward_id=reward.id,
            conversion_id=reward.conversion_id,
            kind=reward.kind,
            amount=reward.amount,
            unit=reward.unit,
        ),
        reward.tenant_id,
        reward.advocate_id,
        domain.reward_event_id(reward.id, ev.MilestoneReached.TYPE),
    )
    await _book(conn, reward, grant, keys, out)
    return reward


async def _book(
    conn: asyncpg.Connection,
    reward: domain.Reward,
    grant: domain.Grant,
    keys: dict[domain.Period, str],
    out: _Outbox,
) -> None:
    """Posts the earn transfer, counts the grant against caps and spend, emits the events."""
    if reward.amount > 0:
        REWARDS_ISSUED.labels(role=reward.role, kind=reward.kind).inc()
        if reward.on_ledger:
            await repository.post_transfers(conn, [ledger.earn_transfer(reward)])
            await repository.add_program_spend(
                conn, reward.tenant_id, reward.program_id, reward.unit, reward.amount
            )
        if keys:
            await repository.add_cap_usage(
                conn,
                reward.tenant_id,
                reward.program_id,
                reward.advocate_id,
                reward.unit,
                [(keys[p], u.count, u.amount) for p, u in grant.usage_delta.items()],
            )
        if reward.state == "pending":
            out.add(
                ev.RewardPending.model_validate(
                    {**_reward_fields(reward), "available_at": reward.available_at}
                ),
                reward.tenant_id,
                reward.advocate_id,
                domain.reward_event_id(reward.id, ev.RewardPending.TYPE),
            )
        else:
            _available(out, reward)
    if grant.capped:
        reason = grant.reason or "capped"
        REWARDS_CAPPED.labels(role=reward.role, reason=reason).inc()
        out.add(
            ev.RewardCapped.model_validate(
                {
                    **_reward_fields(reward),
                    "amount": reward.requested_amount - reward.amount,
                    "reason": reason,
                    "requested_amount": reward.requested_amount,
                    "granted_amount": reward.amount,
                    "period": grant.period,
                }
            ),
            reward.tenant_id,
            reward.advocate_id,
            domain.reward_event_id(reward.id, ev.RewardCapped.TYPE),
        )


def _reward_fields(reward: domain.Reward) -> dict[str, Any]:
    return dict(
        reward_id=reward.id,
        program_id=reward.program_id,
        advocate_id=reward.advocate_id,
        holder_id=reward.holder_id,
        role=reward.role,
        conversion_id=reward.conversion_id,
        kind=reward.kind,
        amount=reward.amount,
        unit=reward.unit,
        rule_version=reward.rule_version,
        trigger=reward.trigger,
    )


def _available(out: _Outbox, reward: domain.Reward) -> None:
    fields = _reward_fields(reward)
    fields["amount"] = reward.outstanding
    out.add(
        ev.RewardAvailable.model_validate(fields),
        reward.tenant_id,
        reward.advocate_id,
        domain.reward_event_id(reward.id, ev.RewardAvailable.TYPE),
    )


async def _settle_debts(conn: asyncpg.Connection, available: list[domain.Reward]) -> None:
    """Newly available rewards first pay off what the holder owes from earlier claw-backs."""
    on_ledger = [r for r in available if r.on_ledger and r.outstanding > 0]
    if not on_ledger:
        return
    owed = await repository.holders_in_debt(
        conn, [ledger.holder_account(r, "debt") for r in on_ledger]
    )
    if not owed:
        return
    settles: list[ledger.Transfer] = []
    for reward in on_ledger:
        debt_id = ledger.holder_account(reward, "debt").id
        amount = min(owed.get(debt_id, 0), reward.outstanding)
        if amount > 0:
            settles.append(ledger.settle_transfer(reward, amount))
            owed[debt_id] -= amount
    await repository.post_transfers(conn, settles)


# --- release ------------------------------------------------------------------------------------


async def release_due_rewards(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """Moves up to `limit` rewards whose hold ended by `now` from pending to available, set-based:
    one locking read, one posting of all their transfers, one update, one outbox insert."""
    due = await repository.lock_due_rewards(conn, now, limit)
    if not due:
        return 0
    await repository.post_transfers(
        conn, [ledger.release_transfer(r) for r in due if r.on_ledger and r.outstanding > 0]
    )
    await repository.mark_available(conn, [r.id for r in due], now)
    out = _Outbox()
    for reward in due:
        _available(out, reward)
    await _settle_debts(conn, due)
    await out.flush(conn)
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
    now = now or domain.utc_now()
    tenant = event.tenantid
    if not await repository.insert_refund(
        conn,
        tenant,
        payload.refund_id,
        payload.conversion_id,
        payload.amount_minor,
        payload.refunded_total_minor,
        payload.full,
        domain.as_utc(payload.refunded_at),
    ):
        log.info("refund %s was already applied", payload.refund_id)
        return
    await repository.lock_advocate(conn, tenant, payload.program_id, payload.advocate_id)
    out = _Outbox()
    for reward in await repository.lock_conversion_rewards(conn, tenant, payload.conversion_id):
        if reward.state not in ("pending", "available") or not reward.on_ledger:
            continue
        reduction = domain.refund_reduction(reward, payload.refunded_total_minor, payload.full)
        if reduction <= 0:
            continue
        await _take_back(conn, reward, reduction, payload.refund_id, now, out)
    await out.flush(conn)


async def _take_back(
    conn: asyncpg.Connection,
    reward: domain.Reward,
    amount: int,
    refund_id: str,
    now: datetime,
    out: _Outbox,
) -> None:
    fields = {**_reward_fields(reward), "amount": amount}
    if reward.state == "pending":
        await repository.post_transfers(conn, [ledger.void_transfer(reward, amount, refund_id)])
        await repository.take_back(conn, reward.id, amount, 0, now)
        out.add(
            ev.RewardVoided.model_validate(
                {
                    **fields,
                    "reason": "refunded",
                    "remaining_amount": reward.outstanding - amount,
                    "refund_id": refund_id,
                    "voided_at": now,
                }
            ),
            reward.tenant_id,
            reward.advocate_id,
            domain.reward_event_id(reward.id, ev.RewardVoided.TYPE, refund_id),
        )
    else:
        available = await repository.lock_balance(conn, ledger.holder_account(reward, "available"))
        taken, debt = domain.clawback_split(reward.clawback, amount, available)
        await repository.post_transfers(
            conn, ledger.clawback_transfers(reward, taken, debt, refund_id)
        )
        await repository.take_back(conn, reward.id, 0, amount, now)
        out.add(
            ev.RewardClawedBack.model_validate(
                {
                    **fields,
                    "method": reward.clawback,
                    "reason": "refunded",
                    "debt_amount": debt,
                    "refund_id": refund_id,
                    "clawed_back_at": now,
                }
            ),
            reward.tenant_id,
            reward.advocate_id,
            domain.reward_event_id(reward.id, ev.RewardClawedBack.TYPE, refund_id),
        )
    # What was taken back was never spent: it returns to the budget and the advocate's caps.
    await repository.add_program_spend(
        conn, reward.tenant_id, reward.program_id, reward.unit, -amount
    )
    if reward.role == "advocate" and reward.purpose == "referral" and reward.occurred_at:
        fully = amount >= reward.outstanding
        await repository.add_cap_usage(
            conn,
            reward.tenant_id,
            reward.program_id,
            reward.advocate_id,
            reward.unit,
            [
                (domain.period_key(p, reward.occurred_at), -1 if fully else 0, -amount)
                for p in ("month", "year", "lifetime")
            ],
        )


# --- coupon pools ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponPool:
    id: str
    program_id: str
    name: str
    low_threshold: int
    total: int
    remaining: int
    created_at: datetime
    added: int | None = None


async def get_coupon_pool(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str, added: int | None = None
) -> CouponPool:
    row = await repository.coupon_pool(conn, tenant_id, pool_id)
    if row is None:
        raise NotFound(f"coupon pool '{pool_id}' does not exist", field="pool_id")
    return CouponPool(
        id=row["id"],
        program_id=row["program_id"],
        name=row["name"],
        low_threshold=row["low_threshold"],
        total=row["total"],
        remaining=row["remaining"],
        created_at=row["created_at"],
        added=added,
    )


async def create_coupon_pool(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    name: str,
    low_threshold: int,
    codes: list[str],
) -> CouponPool:
    pool_id = new_id("cpl")
    await repository.insert_coupon_pool(conn, pool_id, tenant_id, program_id, name, low_threshold)
    added = await repository.add_coupon_codes(conn, pool_id, codes)
    return await get_coupon_pool(conn, tenant_id, pool_id, added)


async def add_coupon_codes(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str, codes: list[str]
) -> CouponPool:
    """Adds codes; codes already in the pool are skipped (`added` counts the new ones)."""
    await get_coupon_pool(conn, tenant_id, pool_id)
    added = await repository.add_coupon_codes(conn, pool_id, codes)
    return await get_coupon_pool(conn, tenant_id, pool_id, added)


# --- balances, statements, verify ---------------------------------------------------------------


async def get_balances(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[ledger.Balance]:
    return ledger.balances(await repository.holder_entries(conn, tenant_id, holder_id))


async def get_statement(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str, after: int, limit: int
) -> tuple[list[repository.StatementLine], int | None]:
    """A page of the holder's entries and the cursor of the next page (None on the last)."""
    lines = await repository.statement(conn, tenant_id, holder_id, after, limit + 1)
    if len(lines) <= limit:
        return lines, None
    page = lines[:limit]
    # A transfer between two of the holder's accounts yields two lines; never split them.
    last = page[-1].seq
    page = [line for line in lines if line.seq <= last]
    return page, last


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checks: dict[str, list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"name": name, "ok": not problems, "problems": problems[:50]}
                for name, problems in self.checks.items()
            ],
        }


async def verify(conn: asyncpg.Connection, tenant_id: str | None) -> VerifyReport:
    """Every unit sums to zero, every balance equals its entries, no orphan or double-posted
    transfer, every reward's and redemption's postings match what they record."""
    checks = await repository.verify_problems(conn, tenant_id)
    return VerifyReport(all(not v for v in checks.values()), checks)

"""Earning, pure: which sides a conversion rewards and how much, what caps and the budget grant
of it, holds, and what a refund takes back. No I/O, so it is unit-tested without infrastructure.

Reward ids derive from their cause (reward_service.ids): one conversion always maps to the same
rewards. Tiers, milestones, caps and refund scaling are functions of their inputs only: the same
conversion, referral count and cap usage always give the same reward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from reward_service import ids
from reward_service.clock import as_utc
from reward_service.holders import HolderType, Role, holder_type_of
from reward_service.rules.domain import (
    PERIODS,
    Cap,
    ClawbackPolicy,
    Milestone,
    Period,
    RewardKind,
    RuleVersion,
    SideReward,
)
from reward_service.units import COUPON

RewardState = Literal["pending", "available", "voided", "capped"]
Purpose = Literal["referral", "milestone"]

_NS_REWARD = ids.namespace("reward")


@dataclass(frozen=True)
class Conversion:
    """The facts of an attributed conversion that rewarding depends on."""

    tenant_id: str
    conversion_id: str
    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    is_first_purchase: bool
    occurred_at: datetime
    order_amount_minor: int | None = None
    order_currency: str | None = None
    sequence: int = 1
    custom_type: str | None = None


def trigger_matches(side: SideReward, conversion: Conversion) -> bool:
    t, ctype = side.trigger, conversion.conversion_type
    if t == "signup":
        return ctype == "signup"
    if t == "first_purchase":
        return ctype == "purchase" and conversion.is_first_purchase
    if t == "every_purchase":
        return ctype == "purchase"
    if t == "subscription_payment":
        return ctype == "subscription_payment" and (
            side.nth is None or conversion.sequence == side.nth
        )
    # custom: the program's own conversion type, named by custom_type (or sent as the type)
    return side.custom_type is not None and side.custom_type in (ctype, conversion.custom_type)


def meets_minimum(side: SideReward, conversion: Conversion) -> bool:
    if side.min_order_minor is None:
        return True
    return (conversion.order_amount_minor or 0) >= side.min_order_minor


def matching_sides(rule: RuleVersion, conversion: Conversion) -> list[SideReward]:
    return [
        s
        for s in rule.definition.rewards
        if trigger_matches(s, conversion) and meets_minimum(s, conversion)
    ]


def holder_of(role: Role, conversion: Conversion) -> tuple[HolderType, str]:
    holder_id = conversion.advocate_id if role == "advocate" else conversion.friend_customer_id
    return holder_type_of(role), holder_id


def reward_id(tenant_id: str, conversion_id: str, rule_version_id: str, role: Role) -> str:
    return ids.short_id("rwd", _NS_REWARD, tenant_id, conversion_id, rule_version_id, role)


def milestone_reward_id(tenant_id: str, program_id: str, advocate_id: str, referrals: int) -> str:
    """One bonus per advocate, program and milestone, whichever version or conversion reached it."""
    return ids.short_id(
        "rwd", _NS_REWARD, tenant_id, "milestone", program_id, advocate_id, str(referrals)
    )


@dataclass(frozen=True)
class Reward:
    id: str
    tenant_id: str
    program_id: str
    rule_version_id: str
    role: Role
    holder_type: HolderType
    holder_id: str
    advocate_id: str
    conversion_id: str
    referral_id: str
    kind: RewardKind
    amount: int
    unit: str
    state: RewardState
    available_at: datetime
    requested_amount: int = 0
    capped_reason: str | None = None
    capped_period: Period | None = None
    purpose: Purpose = "referral"
    trigger: str | None = None
    rule_version: int | None = None
    # percent rewards shrink with partial refunds; fixed ones only go on a full refund
    scalable: bool = False
    order_amount_minor: int | None = None
    voided_amount: int = 0
    clawed_back_amount: int = 0
    clawback: ClawbackPolicy = "negative_entry"
    occurred_at: datetime | None = None
    # the segment whose variant of the rule earned it (None: the rule's default)
    segment: str | None = None

    @property
    def outstanding(self) -> int:
        """What the reward is still worth after voids and claw-backs."""
        return self.amount - self.voided_amount - self.clawed_back_amount

    @property
    def on_ledger(self) -> bool:
        """Coupons are codes, not amounts: they are recorded but never posted."""
        return self.kind != "coupon" and self.amount > 0

    @property
    def holds_value(self) -> bool:
        """Posted and not wholly voided or clawed back: something is left to release or to
        settle a debt with."""
        return self.on_ledger and self.outstanding > 0


@dataclass(frozen=True)
class Candidate:
    """A reward a side has earned before caps and budget decide how much of it is granted."""

    side: SideReward
    role: Role
    requested: int
    unit: str
    scalable: bool


def candidates(
    rule: RuleVersion, conversion: Conversion, referral_number: int | None
) -> list[Candidate]:
    """What each matching side asks for; `referral_number` (the advocate's n-th successful
    referral, this one included) selects the tier."""
    out: list[Candidate] = []
    for side in matching_sides(rule, conversion):
        if side.kind == "coupon":
            out.append(Candidate(side, side.role, 1, COUPON, False))
            continue
        amount = side.amount_for(referral_number or 1)
        requested = amount.compute(conversion.order_amount_minor, conversion.order_currency)
        if requested <= 0:
            continue
        out.append(Candidate(side, side.role, requested, amount.unit, amount.is_percent))
    return out


def _issued(
    rule: RuleVersion,
    conversion: Conversion,
    grant: Grant,
    *,
    reward_id: str,
    role: Role,
    kind: RewardKind,
    unit: str,
    requested: int,
    purpose: Purpose,
    trigger: str,
    scalable: bool = False,
    order_amount_minor: int | None = None,
) -> Reward:
    """A reward as issued: capped when nothing was granted, else held for the rule's hold_days
    from occurred_at (coupons, and every reward of a rule without a hold, are available at
    once)."""
    hold = 0 if kind == "coupon" else rule.definition.hold_days
    occurred_at = as_utc(conversion.occurred_at)
    state: RewardState = "capped" if grant.granted == 0 else ("pending" if hold else "available")
    holder_type, holder_id = holder_of(role, conversion)
    return Reward(
        id=reward_id,
        tenant_id=conversion.tenant_id,
        program_id=conversion.program_id,
        rule_version_id=rule.id,
        role=role,
        holder_type=holder_type,
        holder_id=holder_id,
        advocate_id=conversion.advocate_id,
        conversion_id=conversion.conversion_id,
        referral_id=conversion.referral_id,
        kind=kind,
        amount=grant.granted,
        unit=unit,
        state=state,
        available_at=occurred_at + timedelta(days=hold),
        requested_amount=requested,
        capped_reason=grant.reason,
        capped_period=grant.period,
        purpose=purpose,
        trigger=trigger,
        rule_version=rule.version,
        scalable=scalable,
        order_amount_minor=order_amount_minor,
        clawback=rule.definition.clawback,
        occurred_at=occurred_at,
        segment=rule.segment,
    )


def build_reward(
    rule: RuleVersion, conversion: Conversion, candidate: Candidate, grant: Grant
) -> Reward:
    return _issued(
        rule,
        conversion,
        grant,
        reward_id=reward_id(
            conversion.tenant_id, conversion.conversion_id, rule.id, candidate.role
        ),
        role=candidate.role,
        kind=candidate.side.kind,
        unit=candidate.unit,
        requested=candidate.requested,
        purpose="referral",
        trigger=candidate.side.trigger,
        scalable=candidate.scalable,
        order_amount_minor=conversion.order_amount_minor,
    )


def milestones_reached(rule: RuleVersion, referral_number: int) -> list[Milestone]:
    return [m for m in rule.definition.milestones if m.referrals == referral_number]


def build_milestone_reward(
    rule: RuleVersion, conversion: Conversion, milestone: Milestone, grant: Grant
) -> Reward:
    """Milestone bonuses follow the rule's hold like any advocate reward."""
    return _issued(
        rule,
        conversion,
        grant,
        reward_id=milestone_reward_id(
            conversion.tenant_id, conversion.program_id, conversion.advocate_id, milestone.referrals
        ),
        role="advocate",
        kind=milestone.kind,
        unit=milestone.unit,
        requested=milestone.amount,
        purpose="milestone",
        trigger=f"milestone:{milestone.referrals}",
    )


# --- caps and budget --------------------------------------------------------------------------


def period_key(period: Period, at: datetime) -> str:
    at = as_utc(at)
    if period == "month":
        return f"{at.year:04d}-{at.month:02d}"
    if period == "year":
        return f"{at.year:04d}"
    return "lifetime"


@dataclass(frozen=True)
class Usage:
    """An advocate's rewards so far in one cap period (count and amount in the cap's unit); as
    a delta, what a reward adds to it (or a refund gives back)."""

    count: int = 0
    amount: int = 0


@dataclass(frozen=True)
class Grant:
    granted: int
    reason: str | None = None
    period: Period | None = None
    usage_delta: Mapping[Period, Usage] = field(default_factory=dict)

    @property
    def capped(self) -> bool:
        return self.reason is not None


def apply_caps(
    requested: int,
    caps: tuple[Cap, ...],
    usage: Mapping[Period, Usage],
    budget_remaining: int | None,
) -> Grant:
    """How much of `requested` may be granted: count caps first (an advocate at the count cap
    gets nothing), then amount caps and the budget, each granting what is left under it.
    `caps`/`usage` are empty for the friend side, `budget_remaining` None when no budget
    applies to the unit."""
    granted, reason, period = requested, None, None
    for cap in caps:
        used = usage.get(cap.period, Usage())
        if cap.max_count is not None and used.count >= cap.max_count:
            return Grant(0, "advocate_count_cap", cap.period)
    for cap in caps:
        if cap.max_amount is None:
            continue
        room = max(0, cap.max_amount - usage.get(cap.period, Usage()).amount)
        if room < granted:
            granted, reason, period = room, "advocate_amount_cap", cap.period
    if budget_remaining is not None and budget_remaining < granted:
        granted, reason, period = max(0, budget_remaining), "program_budget", None
    delta = {c.period: Usage(1 if granted > 0 else 0, granted) for c in caps}
    return Grant(granted, reason, period, delta)


def usage_returned(reward: Reward, amount: int) -> dict[str, Usage] | None:
    """What taking `amount` back from `reward` gives back to the advocate's cap usage, by period
    key of the reward's occurred_at (None when the reward never counted against caps)."""
    if reward.role != "advocate" or reward.purpose != "referral" or not reward.occurred_at:
        return None
    count = -1 if amount >= reward.outstanding else 0
    return {period_key(p, reward.occurred_at): Usage(count, -amount) for p in PERIODS}


# --- refunds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refund:
    """A refund of a converted order, recorded once per refund id."""

    tenant_id: str
    refund_id: str
    conversion_id: str
    amount_minor: int
    refunded_total_minor: int
    full_refund: bool
    refunded_at: datetime


def refund_reduction(reward: Reward, refunded_total_minor: int, full: bool) -> int:
    """How much a refund takes back from `reward` (on top of what earlier refunds took).

    A full refund takes everything still outstanding. A partial one scales a percent reward to
    the part of the order kept (granted * kept / order, rounded down in the merchant's favour
    never: half-even, like the reward itself); fixed rewards and quantities stay."""
    outstanding = reward.outstanding
    if outstanding <= 0 or reward.kind == "coupon":
        return 0
    if full:
        return outstanding
    if not reward.scalable or not reward.order_amount_minor:
        return 0
    kept = max(0, reward.order_amount_minor - refunded_total_minor)
    target = int(
        (Decimal(reward.amount) * Decimal(kept) / Decimal(reward.order_amount_minor)).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
    )
    return max(0, outstanding - target)


def clawback_split(policy: ClawbackPolicy, amount: int, available_balance: int) -> tuple[int, int]:
    """(taken from the available balance, recorded as debt). `negative_entry` takes it all from
    available, even below zero; `debt` takes what is there and nets the rest later."""
    if policy == "negative_entry":
        return amount, 0
    taken = max(0, min(amount, available_balance))
    return taken, amount - taken

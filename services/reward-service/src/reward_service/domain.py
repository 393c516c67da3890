"""Pure rules of rewards: no I/O, so they are unit-tested without infrastructure.

Everything a redelivery could otherwise duplicate (reward ids, transfer ids, event ids, account
ids) is derived from its cause (see ledger.py), so one conversion always maps to the same rows and
events, and the database's unique keys turn a replay into a no-op instead of a second posting.

Tiers, milestones, caps and refund scaling are functions of their inputs only: the same
conversion, referral count and cap usage always give the same reward.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from servicekit import money

Clock = Callable[[], datetime]
Trigger = Literal["signup", "first_purchase", "every_purchase", "subscription_payment", "custom"]
Role = Literal["advocate", "friend"]
HolderType = Literal["program", "advocate", "customer"]
RewardKind = Literal["credit", "coupon", "cash", "points", "custom"]
RewardState = Literal["pending", "available", "voided", "capped"]
Rounding = Literal["half_even", "half_up", "down", "up", "floor", "ceiling"]
ClawbackPolicy = Literal["negative_entry", "debt"]
Period = Literal["month", "year", "lifetime"]
Purpose = Literal["referral", "milestone"]

TRIGGERS: tuple[Trigger, ...] = (
    "signup",
    "first_purchase",
    "every_purchase",
    "subscription_payment",
    "custom",
)

# Far below bigint's range, so sums over many transfers cannot overflow either.
MAX_AMOUNT_MINOR = 10**12
MAX_HOLD_DAYS = 3650
# Points are a unit of their own; any other non-currency unit is a quantity (MB, GB, seats).
POINTS = "POINTS"
COUPON = "COUPON"

_ROUNDING = {
    "half_even": ROUND_HALF_EVEN,
    "half_up": ROUND_HALF_UP,
    "down": ROUND_DOWN,
    "up": ROUND_CEILING,  # amounts are never negative here, so up == ceiling
    "floor": ROUND_FLOOR,
    "ceiling": ROUND_CEILING,
}

# Fixed namespaces: changing one would re-key every derived id, so they never change.
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-platform:reward-service")
_NS_REWARD = uuid.uuid5(_NS, "reward")
_NS_EVENT = uuid.uuid5(_NS, "event")


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC (the platform's events are all UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- money and units ------------------------------------------------------------------------


def parse_currency(code: str) -> str | None:
    """The upper-cased ISO 4217 code, or None when it names no currency in use today."""
    normalized = code.strip().upper()
    return normalized if money.is_currency(normalized) else None


def is_currency(unit: str) -> bool:
    return money.is_currency(unit)


exponent = money.exponent
format_minor = money.format_minor


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    """How much one reward is: a fixed number of `unit`'s minor units (cents, points, MB), or a
    percent of the order (only in the order's currency) rounded by `rounding`, optionally capped
    per reward by `max_amount`."""

    unit: str
    fixed: int | None = None
    percent: Decimal | None = None
    rounding: Rounding = "half_even"
    max_amount: int | None = None

    @property
    def is_percent(self) -> bool:
        return self.percent is not None

    def compute(self, order_minor: int | None, order_currency: str | None) -> int:
        if self.percent is None:
            return self.fixed or 0
        if order_minor is None or order_currency != self.unit or order_minor <= 0:
            return 0
        raw = Decimal(order_minor) * self.percent / Decimal(100)
        value = int(raw.quantize(Decimal(1), rounding=_ROUNDING[self.rounding]))
        return min(value, self.max_amount) if self.max_amount is not None else value


@dataclass(frozen=True)
class Tier:
    """The amount for the advocate's n-th successful referral, min_referrals <= n <= max."""

    min_referrals: int
    max_referrals: int | None
    amount: Amount

    def covers(self, n: int) -> bool:
        return n >= self.min_referrals and (self.max_referrals is None or n <= self.max_referrals)


def overlapping_tiers(tiers: tuple[Tier, ...] | list[Tier]) -> tuple[int, int] | None:
    """Indexes (i, j) of the first two tiers whose ranges overlap, or None."""
    for i, a in enumerate(tiers):
        for j in range(i + 1, len(tiers)):
            b = tiers[j]
            a_hi = a.max_referrals if a.max_referrals is not None else float("inf")
            b_hi = b.max_referrals if b.max_referrals is not None else float("inf")
            if a.min_referrals <= b_hi and b.min_referrals <= a_hi:
                return i, j
    return None


@dataclass(frozen=True)
class SideReward:
    """What one side of a referral earns, and on which conversion."""

    role: Role
    trigger: Trigger
    amount: Amount
    kind: RewardKind = "credit"
    min_order_minor: int | None = None
    # subscription_payment: reward only the n-th payment (None: every payment).
    nth: int | None = None
    custom_type: str | None = None
    tiers: tuple[Tier, ...] = ()
    coupon_pool_id: str | None = None

    @property
    def unit(self) -> str:
        return COUPON if self.kind == "coupon" else self.amount.unit

    def amount_for(self, referral_number: int) -> Amount:
        return next((t.amount for t in self.tiers if t.covers(referral_number)), self.amount)


@dataclass(frozen=True)
class Milestone:
    """A one-off bonus when the advocate's successful referrals reach `referrals`."""

    referrals: int
    amount: int
    unit: str
    kind: RewardKind = "credit"


@dataclass(frozen=True)
class Cap:
    """Per advocate and period: at most `max_count` rewards and `max_amount` of the advocate
    side's unit. Periods are calendar months / years in UTC of the conversion's occurred_at."""

    period: Period
    max_count: int | None = None
    max_amount: int | None = None


@dataclass(frozen=True)
class Budget:
    """The program's total spend in `unit` across all versions, both sides."""

    amount: int
    unit: str


@dataclass(frozen=True)
class RuleDefinition:
    """The content of a rule version; two versions with equal definitions reward alike."""

    hold_days: int
    rewards: tuple[SideReward, ...]
    clawback: ClawbackPolicy = "negative_entry"
    milestones: tuple[Milestone, ...] = ()
    caps: tuple[Cap, ...] = ()
    budget: Budget | None = None

    def side(self, role: Role) -> SideReward | None:
        return next((r for r in self.rewards if r.role == role), None)


@dataclass(frozen=True)
class RuleVersion:
    id: str
    tenant_id: str
    program_id: str
    version: int
    valid_from: datetime
    definition: RuleDefinition
    created_at: datetime


def next_version(latest: RuleVersion | None, now: datetime) -> tuple[int, datetime]:
    """Number and valid_from of the version after `latest`. valid_from never goes backwards, so
    the newest version is the one in force even if replicas' clocks disagree slightly."""
    if latest is None:
        return 1, now
    return latest.version + 1, max(now, latest.valid_from)


# Rule definitions are stored as one JSON document per version (Decimal as a string).


def _amount_json(a: Amount) -> dict[str, Any]:
    return {
        "unit": a.unit,
        "fixed": a.fixed,
        "percent": None if a.percent is None else str(a.percent),
        "rounding": a.rounding,
        "max_amount": a.max_amount,
    }


def _amount_from(d: Mapping[str, Any]) -> Amount:
    return Amount(
        unit=d["unit"],
        fixed=d.get("fixed"),
        percent=None if d.get("percent") is None else Decimal(d["percent"]),
        rounding=d.get("rounding", "half_even"),
        max_amount=d.get("max_amount"),
    )


def definition_to_json(d: RuleDefinition) -> dict[str, Any]:
    return {
        "hold_days": d.hold_days,
        "clawback": d.clawback,
        "rewards": [
            {
                "role": s.role,
                "trigger": s.trigger,
                "amount": _amount_json(s.amount),
                "kind": s.kind,
                "min_order_minor": s.min_order_minor,
                "nth": s.nth,
                "custom_type": s.custom_type,
                "tiers": [
                    {
                        "min_referrals": t.min_referrals,
                        "max_referrals": t.max_referrals,
                        "amount": _amount_json(t.amount),
                    }
                    for t in s.tiers
                ],
                "coupon_pool_id": s.coupon_pool_id,
            }
            for s in d.rewards
        ],
        "milestones": [
            {"referrals": m.referrals, "amount": m.amount, "unit": m.unit, "kind": m.kind}
            for m in d.milestones
        ],
        "caps": [
            {"period": c.period, "max_count": c.max_count, "max_amount": c.max_amount}
            for c in d.caps
        ],
        "budget": None if d.budget is None else {"amount": d.budget.amount, "unit": d.budget.unit},
    }


def definition_from_json(d: Mapping[str, Any]) -> RuleDefinition:
    budget = d.get("budget")
    return RuleDefinition(
        hold_days=d["hold_days"],
        clawback=d.get("clawback", "negative_entry"),
        rewards=tuple(
            SideReward(
                role=s["role"],
                trigger=s["trigger"],
                amount=_amount_from(s["amount"]),
                kind=s.get("kind", "credit"),
                min_order_minor=s.get("min_order_minor"),
                nth=s.get("nth"),
                custom_type=s.get("custom_type"),
                tiers=tuple(
                    Tier(t["min_referrals"], t.get("max_referrals"), _amount_from(t["amount"]))
                    for t in s.get("tiers", [])
                ),
                coupon_pool_id=s.get("coupon_pool_id"),
            )
            for s in d["rewards"]
        ),
        milestones=tuple(
            Milestone(m["referrals"], m["amount"], m["unit"], m.get("kind", "credit"))
            for m in d.get("milestones", [])
        ),
        caps=tuple(
            Cap(c["period"], c.get("max_count"), c.get("max_amount")) for c in d.get("caps", [])
        ),
        budget=None if budget is None else Budget(budget["amount"], budget["unit"]),
    )


# --- conversions and rewards ------------------------------------------------------------------


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
    if role == "advocate":
        return "advocate", conversion.advocate_id
    return "customer", conversion.friend_customer_id


def short_id(prefix: str, namespace: uuid.UUID, name: str) -> str:
    # Same look as servicekit.ids.new_id (prefix + 24 base32 chars), but derived, not random.
    token = base64.b32encode(uuid.uuid5(namespace, name).bytes[:15]).decode().lower()
    return f"{prefix}_{token}"


def reward_id(tenant_id: str, conversion_id: str, rule_version_id: str, role: Role) -> str:
    return short_id(
        "rwd", _NS_REWARD, f"{tenant_id}\x1f{conversion_id}\x1f{rule_version_id}\x1f{role}"
    )


def milestone_reward_id(tenant_id: str, program_id: str, advocate_id: str, referrals: int) -> str:
    """One bonus per advocate, program and milestone, whichever version or conversion reached it."""
    return short_id(
        "rwd",
        _NS_REWARD,
        f"{tenant_id}\x1fmilestone\x1f{program_id}\x1f{advocate_id}\x1f{referrals}",
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

    @property
    def purse(self) -> str:
        return "cash" if self.kind == "cash" else "credit"

    @property
    def outstanding(self) -> int:
        """What the reward is still worth after voids and claw-backs."""
        return self.amount - self.voided_amount - self.clawed_back_amount

    @property
    def on_ledger(self) -> bool:
        """Coupons are codes, not amounts: they are recorded but never posted."""
        return self.kind != "coupon" and self.amount > 0


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


def build_reward(
    rule: RuleVersion,
    conversion: Conversion,
    candidate: Candidate,
    grant: Grant,
) -> Reward:
    hold = rule.definition.hold_days
    holder_type, holder_id = holder_of(candidate.role, conversion)
    capped = grant.granted == 0
    immediate = hold == 0 or candidate.side.kind == "coupon"
    state: RewardState = "capped" if capped else ("available" if immediate else "pending")
    return Reward(
        id=reward_id(conversion.tenant_id, conversion.conversion_id, rule.id, candidate.role),
        tenant_id=conversion.tenant_id,
        program_id=conversion.program_id,
        rule_version_id=rule.id,
        role=candidate.role,
        holder_type=holder_type,
        holder_id=holder_id,
        advocate_id=conversion.advocate_id,
        conversion_id=conversion.conversion_id,
        referral_id=conversion.referral_id,
        kind=candidate.side.kind,
        amount=grant.granted,
        unit=candidate.unit,
        state=state,
        available_at=as_utc(conversion.occurred_at) + timedelta(days=0 if immediate else hold),
        requested_amount=candidate.requested,
        capped_reason=grant.reason,
        capped_period=grant.period,
        purpose="referral",
        trigger=candidate.side.trigger,
        rule_version=rule.version,
        scalable=candidate.scalable,
        order_amount_minor=conversion.order_amount_minor,
        clawback=rule.definition.clawback,
        occurred_at=as_utc(conversion.occurred_at),
    )


def milestones_reached(rule: RuleVersion, referral_number: int) -> list[Milestone]:
    return [m for m in rule.definition.milestones if m.referrals == referral_number]


def build_milestone_reward(
    rule: RuleVersion, conversion: Conversion, milestone: Milestone, grant: Grant
) -> Reward:
    """Milestone bonuses follow the rule's hold like any advocate reward."""
    hold = rule.definition.hold_days
    return Reward(
        id=milestone_reward_id(
            conversion.tenant_id, conversion.program_id, conversion.advocate_id, milestone.referrals
        ),
        tenant_id=conversion.tenant_id,
        program_id=conversion.program_id,
        rule_version_id=rule.id,
        role="advocate",
        holder_type="advocate",
        holder_id=conversion.advocate_id,
        advocate_id=conversion.advocate_id,
        conversion_id=conversion.conversion_id,
        referral_id=conversion.referral_id,
        kind=milestone.kind,
        amount=grant.granted,
        unit=milestone.unit,
        state="capped" if grant.granted == 0 else ("available" if hold == 0 else "pending"),
        available_at=as_utc(conversion.occurred_at) + timedelta(days=hold),
        requested_amount=milestone.amount,
        capped_reason=grant.reason,
        capped_period=grant.period,
        purpose="milestone",
        trigger=f"milestone:{milestone.referrals}",
        rule_version=rule.version,
        clawback=rule.definition.clawback,
        occurred_at=as_utc(conversion.occurred_at),
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
    """An advocate's rewards so far in one cap period (count and amount in the cap's unit)."""

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


# --- refunds ----------------------------------------------------------------------------------


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


def reward_event_id(reward_id: str, event_type: str, qualifier: str = "") -> str:
    """One event per reward and state (and refund): the outbox's unique id absorbs a re-emit."""
    name = f"{reward_id}\x1f{event_type}" + (f"\x1f{qualifier}" if qualifier else "")
    return str(uuid.uuid5(_NS_EVENT, name))


def event_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS_EVENT, "\x1f".join(parts)))

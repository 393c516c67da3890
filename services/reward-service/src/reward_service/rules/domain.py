"""Reward rules, pure: what each side of a referral earns and on which conversion, tiers,
milestones, caps, budget, and the versions a program's rule goes through. No I/O.

A rule is stored as one JSON document per version (definition_to_json / definition_from_json);
two versions with equal definitions reward alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from reward_service.holders import Role
from reward_service.units import COUPON

Trigger = Literal["signup", "first_purchase", "every_purchase", "subscription_payment", "custom"]
RewardKind = Literal["credit", "coupon", "cash", "points", "custom"]
Rounding = Literal["half_even", "half_up", "down", "up", "floor", "ceiling"]
ClawbackPolicy = Literal["negative_entry", "debt"]
Period = Literal["month", "year", "lifetime"]

PERIODS: tuple[Period, ...] = ("month", "year", "lifetime")
MAX_HOLD_DAYS = 3650

_ROUNDING = {
    "half_even": ROUND_HALF_EVEN,
    "half_up": ROUND_HALF_UP,
    "down": ROUND_DOWN,
    "up": ROUND_CEILING,  # amounts are never negative here, so up == ceiling
    "floor": ROUND_FLOOR,
    "ceiling": ROUND_CEILING,
}


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
class Variant:
    """What advocates of one segment earn instead of the rule's default: their own sides
    (amounts, units, tiers), milestones and caps. Hold, claw-back and budget stay the rule's."""

    segment: str
    rewards: tuple[SideReward, ...]
    milestones: tuple[Milestone, ...] = ()
    caps: tuple[Cap, ...] = ()
    # Variants are tried by ascending order (then as listed); two that one advocate could
    # match both must each have one, and not the same.
    order: int | None = None


@dataclass(frozen=True)
class RuleDefinition:
    """The content of a rule version; two versions with equal definitions reward alike."""

    hold_days: int
    rewards: tuple[SideReward, ...]
    clawback: ClawbackPolicy = "negative_entry"
    milestones: tuple[Milestone, ...] = ()
    caps: tuple[Cap, ...] = ()
    budget: Budget | None = None
    # as listed; tried by ascending order, then as listed (tried_variants)
    variants: tuple[Variant, ...] = ()

    def side(self, role: Role) -> SideReward | None:
        return next((r for r in self.rewards if r.role == role), None)

    def tried_variants(self) -> list[Variant]:
        """The variants in the order they are tried: by ascending `order` (those without one
        last), then as listed."""
        ranked = sorted(
            enumerate(self.variants),
            key=lambda iv: (iv[1].order is None, iv[1].order or 0, iv[0]),
        )
        return [v for _, v in ranked]

    def for_segments(self, matched: frozenset[str]) -> tuple[RuleDefinition, str | None]:
        """The definition an advocate in the `matched` segments earns under: the first variant
        whose segment they are in, else the default; and that variant's segment (None: the
        default). Caps count the advocate's usage whichever variant earned it, so after a move
        the new variant's cap applies to everything already earned in its unit."""
        variant = next((v for v in self.tried_variants() if v.segment in matched), None)
        if variant is None:
            return replace(self, variants=()), None
        chosen = replace(
            self,
            rewards=variant.rewards,
            milestones=variant.milestones,
            caps=variant.caps,
            variants=(),
        )
        return chosen, variant.segment


@dataclass(frozen=True)
class RuleVersion:
    id: str
    tenant_id: str
    program_id: str
    version: int
    valid_from: datetime
    definition: RuleDefinition
    created_at: datetime
    # Set once the definition is resolved for one advocate (RuleDefinition.for_segments): the
    # segment whose variant it is (None: the default).
    segment: str | None = None


def next_version(latest: RuleVersion | None, now: datetime) -> tuple[int, datetime]:
    """Number and valid_from of the version after `latest`. valid_from never goes backwards, so
    the newest version is the one in force even if replicas' clocks disagree slightly."""
    if latest is None:
        return 1, now
    return latest.version + 1, max(now, latest.valid_from)


# --- the stored document (Decimal as a string) ---------------------------------------------------


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


def side_to_json(s: SideReward) -> dict[str, Any]:
    return {
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


def _milestones_json(milestones: tuple[Milestone, ...]) -> list[dict[str, Any]]:
    return [
        {"referrals": m.referrals, "amount": m.amount, "unit": m.unit, "kind": m.kind}
        for m in milestones
    ]


def _caps_json(caps: tuple[Cap, ...]) -> list[dict[str, Any]]:
    return [
        {"period": c.period, "max_count": c.max_count, "max_amount": c.max_amount} for c in caps
    ]


def variant_to_json(v: Variant) -> dict[str, Any]:
    return {
        "segment": v.segment,
        "order": v.order,
        "rewards": [side_to_json(s) for s in v.rewards],
        "milestones": _milestones_json(v.milestones),
        "caps": _caps_json(v.caps),
    }


def definition_to_json(d: RuleDefinition) -> dict[str, Any]:
    doc = {
        "hold_days": d.hold_days,
        "clawback": d.clawback,
        "rewards": [side_to_json(s) for s in d.rewards],
        "milestones": _milestones_json(d.milestones),
        "caps": _caps_json(d.caps),
        "budget": None if d.budget is None else {"amount": d.budget.amount, "unit": d.budget.unit},
    }
    if d.variants:  # absent otherwise: rules stored before variants compare equal
        doc["variants"] = [variant_to_json(v) for v in d.variants]
    return doc


def _side_from(s: Mapping[str, Any]) -> SideReward:
    return SideReward(
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


def _milestones_from(d: Mapping[str, Any]) -> tuple[Milestone, ...]:
    return tuple(
        Milestone(m["referrals"], m["amount"], m["unit"], m.get("kind", "credit"))
        for m in d.get("milestones", [])
    )


def _caps_from(d: Mapping[str, Any]) -> tuple[Cap, ...]:
    return tuple(
        Cap(c["period"], c.get("max_count"), c.get("max_amount")) for c in d.get("caps", [])
    )


def definition_from_json(d: Mapping[str, Any]) -> RuleDefinition:
    budget = d.get("budget")
    return RuleDefinition(
        hold_days=d["hold_days"],
        clawback=d.get("clawback", "negative_entry"),
        rewards=tuple(_side_from(s) for s in d["rewards"]),
        milestones=_milestones_from(d),
        caps=_caps_from(d),
        budget=None if budget is None else Budget(budget["amount"], budget["unit"]),
        variants=tuple(
            Variant(
                segment=v["segment"],
                rewards=tuple(_side_from(s) for s in v["rewards"]),
                milestones=_milestones_from(v),
                caps=_caps_from(v),
                order=v.get("order"),
            )
            for v in d.get("variants", [])
        ),
    )

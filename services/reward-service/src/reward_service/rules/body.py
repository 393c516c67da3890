"""A reward rule body (schemas.RewardRuleIn) checked across its fields (the single fields are
checked by rules/schemas.py) and turned into a domain.RuleDefinition: the one parse of a rule,
for the PUT route and for an experiment's promoted variant (handlers.on_rule_promoted) alike."""

from __future__ import annotations

from reward_service import units
from reward_service.holders import Role
from reward_service.rules import domain
from reward_service.rules.schemas import (
    AmountIn,
    CapIn,
    MilestoneIn,
    RewardRuleIn,
    SideIn,
    VariantIn,
)
from servicekit.problems import InvalidInput


def _amount(body: AmountIn, field: str) -> domain.Amount:
    given = [
        name
        for name in ("amount_minor", "percent", "points", "quantity")
        if getattr(body, name) is not None
    ]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one of amount_minor, percent, points, quantity"
            + (f" (got {', '.join(given)})" if given else ""),
            field=field,
        )
    kind = given[0]
    if kind in ("amount_minor", "percent") and body.currency is None:
        raise InvalidInput(f"{kind} needs a currency", field=f"{field}/currency")
    if kind == "amount_minor":
        assert body.currency is not None and body.amount_minor is not None
        return domain.Amount(unit=body.currency, fixed=body.amount_minor)
    if kind == "percent":
        assert body.currency is not None
        return domain.Amount(
            unit=body.currency,
            percent=body.percent,
            rounding=body.rounding,
            max_amount=body.max_amount_minor,
        )
    if kind == "points":
        return domain.Amount(unit=units.POINTS, fixed=body.points)
    if body.unit is None:
        raise InvalidInput("a quantity needs its unit (e.g. MB)", field=f"{field}/unit")
    return domain.Amount(unit=body.unit, fixed=body.quantity)


def _tiers(role: Role, body: SideIn, unit: str) -> tuple[domain.Tier, ...]:
    """The side's tiers in referral order, each in the side's unit, no two overlapping."""
    tiers: list[domain.Tier] = []
    for i, t in enumerate(body.tiers):
        where = f"/{role}/tiers/{i}"
        if t.max_referrals is not None and t.max_referrals < t.min_referrals:
            raise InvalidInput(
                "max_referrals is below min_referrals", field=f"{where}/max_referrals"
            )
        tier_amount = _amount(t.amount, f"{where}/amount")
        if tier_amount.unit != unit:
            raise InvalidInput(f"a tier pays in the side's unit {unit}", field=f"{where}/amount")
        tiers.append(domain.Tier(t.min_referrals, t.max_referrals, tier_amount))
    overlap = domain.overlapping_tiers(tiers)
    if overlap is not None:
        i, j = overlap
        raise InvalidInput(
            f"tiers[{i}] and tiers[{j}] overlap: each referral count must fall in one tier",
            field=f"/{role}/tiers",
        )
    return tuple(sorted(tiers, key=lambda t: t.min_referrals))


def _side(role: Role, body: SideIn) -> domain.SideReward:
    if body.trigger == "custom" and body.custom_type is None:
        raise InvalidInput("a custom trigger names its custom_type", field=f"/{role}/custom_type")
    if body.nth is not None and body.trigger != "subscription_payment":
        raise InvalidInput("nth applies to subscription_payment only", field=f"/{role}/nth")
    if body.kind == "coupon":
        if body.coupon_pool_id is None:
            raise InvalidInput("a coupon reward names its pool", field=f"/{role}/coupon_pool_id")
        if body.tiers:
            raise InvalidInput("coupon rewards have no tiers", field=f"/{role}/tiers")
        amount = domain.Amount(unit=units.COUPON, fixed=1)
    else:
        if body.amount is None:
            raise InvalidInput(f"a {body.kind} reward needs an amount", field=f"/{role}/amount")
        amount = _amount(body.amount, f"/{role}/amount")
        if body.coupon_pool_id is not None:
            raise InvalidInput("only coupon rewards use a pool", field=f"/{role}/coupon_pool_id")
    if body.kind == "cash" and not units.is_currency(amount.unit):
        raise InvalidInput("a cash reward is paid in a currency", field=f"/{role}/amount")
    if body.kind == "points" and amount.unit != units.POINTS:
        raise InvalidInput("a points reward is given in points", field=f"/{role}/amount")
    return domain.SideReward(
        role=role,
        trigger=body.trigger,
        amount=amount,
        kind=body.kind,
        min_order_minor=body.min_order_minor,
        nth=body.nth,
        custom_type=body.custom_type,
        tiers=_tiers(role, body, amount.unit),
        coupon_pool_id=body.coupon_pool_id,
    )


def _advocate(body: RewardRuleIn) -> SideIn | None:
    """The advocate side, also when given in the first API's shorthand."""
    if body.advocate_reward is None and body.trigger is None:
        return body.advocate
    if body.advocate is not None:
        raise InvalidInput("give either advocate or advocate_reward", field="/advocate_reward")
    if body.advocate_reward is None:
        raise InvalidInput("advocate_reward is required with trigger", field="/advocate_reward")
    if body.trigger is None:
        raise InvalidInput("trigger is required with advocate_reward", field="/trigger")
    return SideIn(
        trigger=body.trigger,
        amount=AmountIn(
            amount_minor=body.advocate_reward.amount_minor,
            currency=body.advocate_reward.currency,
        ),
    )


def _milestones(items: list[MilestoneIn]) -> tuple[domain.Milestone, ...]:
    milestones: list[domain.Milestone] = []
    for i, m in enumerate(items):
        amount = _amount(m.amount, f"/milestones/{i}/amount")
        if amount.is_percent:
            raise InvalidInput(
                "a milestone bonus is a fixed amount", field=f"/milestones/{i}/amount"
            )
        assert amount.fixed is not None
        milestones.append(domain.Milestone(m.referrals, amount.fixed, amount.unit, m.kind))
    if len({m.referrals for m in milestones}) != len(milestones):
        raise InvalidInput("two milestones at the same referral count", field="/milestones")
    return tuple(sorted(milestones, key=lambda m: m.referrals))


def _caps(items: list[CapIn], has_advocate: bool) -> tuple[domain.Cap, ...]:
    caps: list[domain.Cap] = []
    for i, c in enumerate(items):
        if c.max_count is None and c.max_amount is None:
            raise InvalidInput("a cap sets max_count, max_amount or both", field=f"/caps/{i}")
        caps.append(domain.Cap(c.period, c.max_count, c.max_amount))
    if caps and not has_advocate:
        raise InvalidInput("caps limit the advocate side, which this rule lacks", field="/caps")
    if len({c.period for c in caps}) != len(caps):
        raise InvalidInput("one cap per period", field="/caps")
    return tuple(caps)


def definition(body: RewardRuleIn) -> domain.RuleDefinition:
    given: tuple[tuple[Role, SideIn | None], ...] = (
        ("advocate", _advocate(body)),
        ("friend", body.friend),
    )
    sides = [_side(role, s) for role, s in given if s is not None]
    variants = _variants(body.variants)
    if not sides and not variants:
        raise InvalidInput("a rule rewards the advocate, the friend or both", field="/advocate")
    milestones = _milestones(body.milestones)
    caps = _caps(body.caps, any(s.role == "advocate" for s in sides))
    budget = None
    if body.budget is not None:
        budget = domain.Budget(
            body.budget.amount, units.parse_unit(body.budget.unit, "/budget/unit")
        )
    return domain.RuleDefinition(
        hold_days=body.hold_days,
        rewards=tuple(sides),
        clawback=body.clawback,
        milestones=milestones,
        caps=caps,
        budget=budget,
        variants=variants,
    )


def _within(prefix: str, field: str | None) -> str:
    """A field of a variant's part as a JSON pointer under the variant."""
    if not field:
        return prefix
    if field.startswith("/"):
        return prefix + field
    return prefix + "/" + field.replace("[", ".").replace("]", "").replace(".", "/")


def _variant(i: int, body: VariantIn) -> domain.Variant:
    try:
        given: tuple[tuple[Role, SideIn | None], ...] = (
            ("advocate", body.advocate),
            ("friend", body.friend),
        )
        sides = tuple(_side(role, s) for role, s in given if s is not None)
        if not sides:
            raise InvalidInput("a variant rewards the advocate, the friend or both", field="")
        return domain.Variant(
            segment=body.segment,
            rewards=sides,
            milestones=_milestones(body.milestones),
            caps=_caps(body.caps, any(s.role == "advocate" for s in sides)),
            order=body.order,
        )
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field=_within(f"/variants/{i}", exc.field)) from None


def _variants(items: list[VariantIn]) -> tuple[domain.Variant, ...]:
    """The variants as listed (domain.RuleDefinition.for_segments tries them by `order`)."""
    variants = [_variant(i, v) for i, v in enumerate(items)]
    for i, v in enumerate(variants):
        if any(w.segment == v.segment for w in variants[:i]):
            raise InvalidInput(
                f"segment '{v.segment}' has two variants", field=f"/variants/{i}/segment"
            )
    return tuple(variants)

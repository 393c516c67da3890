"""Reward rules and ledger arithmetic, without infrastructure."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from reward_service import events, units
from reward_service.earning import domain, postings
from reward_service.holders import Role
from reward_service.ledger import domain as ledger
from reward_service.rules import domain as rules
from reward_service.rules.body import definition as _definition
from reward_service.rules.schemas import AmountIn, RewardRuleIn
from servicekit.problems import InvalidInput, pointer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def usd(minor: int) -> rules.Amount:
    return rules.Amount(unit="USD", fixed=minor)


def side(
    role: Role = "advocate",
    trigger: rules.Trigger = "first_purchase",
    amount: rules.Amount | None = None,
    **kw: Any,
) -> rules.SideReward:
    return rules.SideReward(role=role, trigger=trigger, amount=amount or usd(2000), **kw)


def rule(*sides: rules.SideReward, rule_id: str = "rrv_1", **kw: Any) -> rules.RuleVersion:
    definition = rules.RuleDefinition(
        hold_days=kw.pop("hold_days", 0), rewards=sides or (side(),), **kw
    )
    return rules.RuleVersion(
        id=rule_id,
        tenant_id="acme",
        program_id="prg_1",
        version=1,
        valid_from=T0,
        definition=definition,
        created_at=T0,
    )


def conversion(
    conversion_type: str = "purchase",
    first: bool = True,
    conversion_id: str = "cnv_1",
    occurred_at: datetime = T0,
    **kw: Any,
) -> domain.Conversion:
    return domain.Conversion(
        tenant_id="acme",
        conversion_id=conversion_id,
        referral_id="ref_1",
        program_id="prg_1",
        advocate_id="adv_1",
        friend_customer_id="cus_friend",
        conversion_type=conversion_type,
        is_first_purchase=first,
        occurred_at=occurred_at,
        **kw,
    )


def earned(r: rules.RuleVersion, c: domain.Conversion, number: int = 1) -> list[domain.Reward]:
    """The rewards a conversion earns with no caps in the way."""
    return [
        domain.build_reward(r, c, cand, domain.Grant(cand.requested))
        for cand in domain.candidates(r, c, number)
    ]


# --- triggers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "conversion_type", "first", "expected"),
    [
        ("first_purchase", "purchase", True, True),
        ("first_purchase", "purchase", False, False),
        ("first_purchase", "signup", False, False),
        ("every_purchase", "purchase", True, True),
        ("every_purchase", "purchase", False, True),
        ("every_purchase", "signup", False, False),
        ("signup", "signup", False, True),
        ("signup", "purchase", True, False),
        ("every_purchase", "subscription_payment", False, False),
        ("subscription_payment", "subscription_payment", False, True),
    ],
)
def test_trigger_matching(
    trigger: rules.Trigger, conversion_type: str, first: bool, expected: bool
) -> None:
    s = side(trigger=trigger)
    assert domain.trigger_matches(s, conversion(conversion_type, first)) is expected


def test_nth_subscription_payment_and_custom_types() -> None:
    third = side(trigger="subscription_payment", nth=3)
    assert not domain.trigger_matches(third, conversion("subscription_payment", sequence=2))
    assert domain.trigger_matches(third, conversion("subscription_payment", sequence=3))
    demo = side(trigger="custom", custom_type="demo_booked")
    assert domain.trigger_matches(demo, conversion("custom", custom_type="demo_booked"))
    assert domain.trigger_matches(demo, conversion("demo_booked"))
    assert not domain.trigger_matches(demo, conversion("custom", custom_type="other"))


def test_minimum_order_filters_a_side() -> None:
    r = rule(side(min_order_minor=5000), side("friend", min_order_minor=1000))
    sides = domain.matching_sides(r, conversion(order_amount_minor=3000, order_currency="USD"))
    assert [s.role for s in sides] == ["friend"]


# --- amounts, tiers, milestones ---------------------------------------------------------------


def test_two_sided_rule_rewards_both_holders() -> None:
    r = rule(side(), side("friend", amount=usd(1500)))
    adv, friend = earned(r, conversion())
    assert (adv.holder_type, adv.holder_id, adv.amount) == ("advocate", "adv_1", 2000)
    assert (friend.holder_type, friend.holder_id, friend.amount) == ("customer", "cus_friend", 1500)
    assert adv.id != friend.id and adv.state == friend.state == "available"


@pytest.mark.parametrize(
    ("order", "rounding", "expected"),
    [
        (1250, "half_even", 125),
        (1225, "half_even", 122),  # 122.5 -> 122 (even)
        (1235, "half_even", 124),  # 123.5 -> 124 (even)
        (1225, "half_up", 123),
        (1229, "down", 122),
        (1221, "up", 123),
    ],
)
def test_percent_of_order_is_rounded_as_stated(order: int, rounding: str, expected: int) -> None:
    amount = rules.Amount(unit="USD", percent=Decimal("10"), rounding=rounding)  # type: ignore[arg-type]
    assert amount.compute(order, "USD") == expected


def test_percent_needs_an_order_in_its_currency_and_respects_its_maximum() -> None:
    amount = rules.Amount(unit="USD", percent=Decimal("10"), max_amount=500)
    assert amount.compute(None, None) == 0
    assert amount.compute(10_000, "EUR") == 0
    assert amount.compute(100_000, "USD") == 500


def test_tiers_step_up_with_the_advocates_referral_count() -> None:
    tiers = (
        rules.Tier(1, 5, usd(1000)),
        rules.Tier(6, None, usd(1500)),
    )
    r = rule(side(trigger="every_purchase", tiers=tiers))
    amounts = [earned(r, conversion(), n)[0].amount for n in range(1, 9)]
    assert amounts == [1000] * 5 + [1500] * 3


def test_overlapping_tiers_are_found() -> None:
    ok = [rules.Tier(1, 5, usd(1)), rules.Tier(6, None, usd(2))]
    assert rules.overlapping_tiers(ok) is None
    assert rules.overlapping_tiers([rules.Tier(1, 5, usd(1)), rules.Tier(5, 9, usd(2))]) == (
        0,
        1,
    )
    assert rules.overlapping_tiers([rules.Tier(3, None, usd(1)), rules.Tier(10, 12, usd(2))])


def test_milestones_are_reached_once_at_their_count() -> None:
    r = rule(milestones=(rules.Milestone(3, 5000, "USD"),))
    assert [domain.milestones_reached(r, n) for n in (1, 2, 4)] == [[], [], []]
    [m] = domain.milestones_reached(r, 3)
    bonus = domain.build_milestone_reward(r, conversion(), m, domain.Grant(5000))
    again = domain.build_milestone_reward(
        r, conversion(conversion_id="cnv_9"), m, domain.Grant(5000)
    )
    assert bonus.id == again.id  # one bonus per advocate and milestone, whoever reached it
    assert (bonus.purpose, bonus.amount) == ("milestone", 5000)
    assert postings.earn_transfer(bonus).id != postings.earn_transfer(earned(r, conversion())[0]).id


# --- caps and budget -------------------------------------------------------------------------


def test_amount_cap_grants_the_room_left_then_nothing() -> None:
    caps = (rules.Cap("lifetime", max_amount=16_384),)
    full = domain.apply_caps(500, caps, {"lifetime": domain.Usage(32, 16_000)}, None)
    assert (full.granted, full.reason, full.period) == (384, "advocate_amount_cap", "lifetime")
    none = domain.apply_caps(500, caps, {"lifetime": domain.Usage(33, 16_384)}, None)
    assert (none.granted, none.capped) == (0, True)
    under = domain.apply_caps(500, caps, {}, None)
    assert (under.granted, under.capped) == (500, False)
    assert under.usage_delta == {"lifetime": domain.Usage(1, 500)}


def test_count_cap_and_budget() -> None:
    caps = (rules.Cap("month", max_count=2),)
    assert domain.apply_caps(100, caps, {"month": domain.Usage(2, 0)}, None).reason == (
        "advocate_count_cap"
    )
    grant = domain.apply_caps(100, (), {}, budget_remaining=30)
    assert (grant.granted, grant.reason) == (30, "program_budget")
    assert domain.apply_caps(100, (), {}, budget_remaining=-5).granted == 0


def test_period_keys_are_calendar_periods_in_utc() -> None:
    late = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert domain.period_key("month", late) == "2026-12"
    assert domain.period_key("year", late) == "2026"
    assert domain.period_key("lifetime", late) == "lifetime"


@given(
    st.integers(1, 10_000),
    st.lists(st.integers(1, 2_000), max_size=40),
    st.integers(0, 50_000),
)
def test_caps_never_grant_beyond_the_cap(per_reward: int, requests: list[int], cap: int) -> None:
    caps = (rules.Cap("lifetime", max_amount=cap),)
    used = domain.Usage()
    for requested in [per_reward, *requests]:
        grant = domain.apply_caps(requested, caps, {"lifetime": used}, None)
        assert 0 <= grant.granted <= requested
        assert grant.capped == (grant.granted < requested)
        delta = grant.usage_delta["lifetime"]
        used = domain.Usage(used.count + delta.count, used.amount + delta.amount)
    assert used.amount <= cap


# --- holds and refunds -------------------------------------------------------------------------


def test_hold_makes_the_reward_pending_until_occurred_at_plus_hold() -> None:
    [reward] = earned(rule(hold_days=30), conversion())
    assert reward.state == "pending"
    assert reward.available_at == T0 + timedelta(days=30)
    naive = datetime(2026, 3, 1, 12, 0)
    [reward] = earned(rule(hold_days=1), conversion(occurred_at=naive))
    assert reward.available_at == T0 + timedelta(days=1)


def test_partial_refunds_scale_percent_rewards_and_leave_fixed_ones() -> None:
    pct = side(amount=rules.Amount(unit="USD", percent=Decimal("10")))
    [percent] = earned(rule(pct), conversion(order_amount_minor=10_000, order_currency="USD"))
    assert percent.amount == 1000 and percent.scalable
    assert domain.refund_reduction(percent, 2500, full=False) == 250
    assert domain.refund_reduction(percent, 10_000, full=False) == 1000
    assert domain.refund_reduction(percent, 0, full=True) == 1000
    after_first = domain.Reward(**{**percent.__dict__, "voided_amount": 250})
    assert domain.refund_reduction(after_first, 5000, full=False) == 250

    [fixed] = earned(rule(), conversion(order_amount_minor=10_000, order_currency="USD"))
    assert domain.refund_reduction(fixed, 2500, full=False) == 0
    assert domain.refund_reduction(fixed, 10_000, full=True) == 2000


def test_clawback_policies() -> None:
    assert domain.clawback_split("negative_entry", 2000, 500) == (2000, 0)
    assert domain.clawback_split("debt", 2000, 500) == (500, 1500)
    assert domain.clawback_split("debt", 2000, 5000) == (2000, 0)
    assert domain.clawback_split("debt", 2000, -100) == (0, 2000)


# --- ledger ------------------------------------------------------------------------------------


def test_ids_derive_from_the_cause() -> None:
    a = earned(rule(), conversion())[0]
    again = earned(rule(), conversion())[0]
    other_conversion = earned(rule(), conversion(conversion_id="cnv_2"))[0]
    other_version = earned(rule(rule_id="rrv_2"), conversion())[0]
    assert a.id == again.id
    assert len({a.id, other_conversion.id, other_version.id}) == 3
    assert postings.earn_transfer(a).id == postings.earn_transfer(again).id
    assert events.reward_event_id(a.id, "reward.available.v1") == events.reward_event_id(
        again.id, "reward.available.v1"
    )
    assert events.reward_event_id(a.id, "reward.voided.v1", "rf_1") != events.reward_event_id(
        a.id, "reward.voided.v1", "rf_2"
    )
    legs = {
        ledger.transfer_id("acme", "cnv_1", "rrv_1", role, leg)
        for role in ("advocate", "friend")
        for leg in ("earn", "release")
    }
    assert len(legs) == 4
    assert ledger.transfer_id("acme", "cnv_1", "rrv_1", "advocate", "earn") != (
        ledger.transfer_id("globex", "cnv_1", "rrv_1", "advocate", "earn")
    )


def _apply(transfers: list[ledger.Transfer]) -> dict[ledger.AccountRef, int]:
    balances: dict[ledger.AccountRef, int] = {}
    for t in transfers:
        balances[t.debit] = balances.get(t.debit, 0) - t.amount
        balances[t.credit] = balances.get(t.credit, 0) + t.amount
    return balances


def test_earn_release_void_and_clawback_keep_every_unit_at_zero() -> None:
    [reward] = earned(rule(hold_days=30), conversion())
    earn = postings.earn_transfer(reward)
    assert (earn.debit.holder_type, earn.debit.kind) == ("program", "liability")
    assert (earn.credit.holder_id, earn.credit.kind) == ("adv_1", "pending")
    void = postings.void_transfer(reward, 500, "rf_1")
    partly = domain.Reward(**{**reward.__dict__, "voided_amount": 500})
    release = postings.release_transfer(partly)
    assert release.amount == 1500 and release.debit == earn.credit
    released = domain.Reward(**{**partly.__dict__, "state": "available"})
    claw = postings.clawback_transfers(released, 1000, 500, "rf_2")
    assert [t.leg for t in claw] == ["clawback", "debt"]
    balances = _apply([earn, void, release, *claw])
    assert sum(balances.values()) == 0
    available = postings.holder_account(reward, "available")
    assert balances[available] == 500
    assert balances[postings.holder_account(reward, "debt")] == -500
    assert len({t.id for t in [earn, void, release, *claw]}) == 5


def test_only_a_pending_reward_can_be_released() -> None:
    [reward] = earned(rule(hold_days=0), conversion())
    with pytest.raises(ValueError, match="not pending"):
        postings.release_transfer(reward)


def test_transfer_refuses_bad_shapes() -> None:
    usd_l = ledger.AccountRef("acme", "program", "prg_1", "liability", "USD")
    eur = ledger.AccountRef("acme", "advocate", "adv_1", "available", "EUR")
    usd_holder = ledger.AccountRef("acme", "advocate", "adv_1", "available", "USD")
    other_tenant = ledger.AccountRef("globex", "advocate", "adv_1", "available", "USD")
    tid = ledger.transfer_id("acme", "c", "r", "advocate", "earn")

    def transfer(debit: ledger.AccountRef, credit: ledger.AccountRef, amount: int) -> None:
        ledger.Transfer(tid, "acme", debit, credit, amount, "USD", "c", None, "earn")

    transfer(usd_l, usd_holder, 1)
    for debit, credit, amount in [
        (usd_l, usd_holder, 0),
        (usd_l, usd_holder, -5),
        (usd_l, usd_l, 1),
        (usd_l, eur, 1),
        (usd_l, other_tenant, 1),
    ]:
        with pytest.raises(ValueError):
            transfer(debit, credit, amount)


def test_account_ids_are_stable_and_distinct() -> None:
    a = ledger.AccountRef("acme", "advocate", "adv_1", "available", "USD")
    assert a.id == ledger.AccountRef("acme", "advocate", "adv_1", "available", "USD").id
    # the credit purse keeps the id accounts had before purses existed
    old_ns = uuid.uuid5(
        uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-platform:reward-service"), "account"
    )
    assert a.id == uuid.uuid5(old_ns, "acme\x1fadvocate\x1fadv_1\x1favailable\x1fUSD")
    assert a.id != ledger.AccountRef("acme", "advocate", "adv_1", "pending", "USD").id
    assert a.id != ledger.AccountRef("acme", "advocate", "adv_1", "available", "EUR").id
    assert a.id != ledger.AccountRef("globex", "advocate", "adv_1", "available", "USD").id
    assert a.id != ledger.AccountRef("acme", "advocate", "adv_1", "available", "USD", "cash").id


def test_balances_are_grouped_per_unit_and_purse() -> None:
    rows = [
        ("USD", "credit", "available", 2000),
        ("USD", "credit", "pending", 500),
        ("USD", "cash", "available", 700),
        ("EUR", "credit", "pending", 100),
        ("EUR", "credit", "debt", -40),
    ]
    assert ledger.balances(rows) == [
        ledger.Balance("EUR", "credit", 0, 100, debt_minor=40),
        ledger.Balance("USD", "cash", 700, 0),
        ledger.Balance("USD", "credit", 2000, 500),
    ]
    assert ledger.balances([]) == []


def test_next_version_never_moves_valid_from_backwards() -> None:
    assert rules.next_version(None, T0) == (1, T0)
    latest = rule()
    assert rules.next_version(latest, T0 + timedelta(hours=1)) == (2, T0 + timedelta(hours=1))
    assert rules.next_version(latest, T0 - timedelta(seconds=3)) == (2, T0)


@pytest.mark.parametrize(
    ("minor", "unit", "text"),
    [
        (2000, "USD", "20.00"),
        (0, "USD", "0.00"),
        (5, "EUR", "0.05"),
        (500, "JPY", "500"),
        (1234, "BHD", "1.234"),
        (-150, "USD", "-1.50"),
        (16_000, "MB", "16000"),
    ],
)
def test_format_minor(minor: int, unit: str, text: str) -> None:
    assert units.format_minor(minor, unit) == text


@pytest.mark.parametrize(
    ("code", "expected"),
    [("USD", "USD"), ("usd", "USD"), (" eur ", "EUR"), ("XYZ", None), ("XXX", None), ("", None)],
)
def test_parse_currency_accepts_only_currencies_in_use(code: str, expected: str | None) -> None:
    assert units.parse_currency(code) == expected


# --- rule documents and bad input ----------------------------------------------------------------

DROPBOX = {
    "advocate": {"trigger": "signup", "amount": {"quantity": 500, "unit": "MB"}},
    "friend": {"trigger": "signup", "amount": {"quantity": 500, "unit": "mb"}},
    "caps": [{"period": "lifetime", "max_amount": 16384}],
}


def test_rule_definition_round_trips_through_its_json_document() -> None:
    body = {
        "hold_days": 30,
        "clawback": "debt",
        "advocate": {
            "trigger": "every_purchase",
            "amount": {"percent": "10", "currency": "USD", "rounding": "half_up"},
            "tiers": [
                {"min_referrals": 6, "amount": {"percent": "15", "currency": "USD"}},
                {
                    "min_referrals": 1,
                    "max_referrals": 5,
                    "amount": {"percent": "10", "currency": "USD"},
                },
            ],
            "min_order_minor": 1000,
        },
        "friend": {"trigger": "first_purchase", "kind": "coupon", "coupon_pool_id": "cpl_1"},
        "milestones": [{"referrals": 3, "amount": {"amount_minor": 5000, "currency": "USD"}}],
        "caps": [{"period": "month", "max_count": 10, "max_amount": 100_000}],
        "budget": {"amount": 1_000_000, "unit": "usd"},
    }
    d = _definition(RewardRuleIn.model_validate(body))
    adv = d.side("advocate")
    assert adv is not None and [t.min_referrals for t in adv.tiers] == [1, 6]
    assert d.budget == rules.Budget(1_000_000, "USD")
    assert rules.definition_from_json(rules.definition_to_json(d)) == d
    dropbox = _definition(RewardRuleIn.model_validate(DROPBOX))
    assert {s.unit for s in dropbox.rewards} == {"MB"}


def test_the_first_apis_shorthand_still_works() -> None:
    d = _definition(
        RewardRuleIn.model_validate(
            {"advocate_reward": {"amount_minor": 2000, "currency": "usd"}, "trigger": "signup"}
        )
    )
    assert d.rewards == (side(trigger="signup"),)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"advocate": {"trigger": "signup", "amount": {"amount_minor": -5, "currency": "USD"}}},
            "advocate.amount.amount_minor",
        ),
        (
            {"advocate": {"trigger": "signup", "amount": {"amount_minor": 5, "currency": "XYZ"}}},
            "advocate.amount.currency",
        ),
        (
            {"friend": {"trigger": "signup", "amount": {"quantity": 5, "unit": "EUR"}}},
            "friend.amount.unit",
        ),
        (
            {"advocate": {"trigger": "signup", "amount": {"percent": "120", "currency": "USD"}}},
            "advocate.amount.percent",
        ),
        ({"advocate": {"trigger": "weekly", "amount": {"points": 5}}}, "advocate.trigger"),
        ({"caps": [{"period": "week", "max_count": 1}]}, "caps.0.period"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RewardRuleIn.model_validate(body)
    assert ".".join(map(str, info.value.errors()[0]["loc"])) == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "advocate": {
                    "trigger": "every_purchase",
                    "amount": {"amount_minor": 1000, "currency": "USD"},
                    "tiers": [
                        {
                            "min_referrals": 1,
                            "max_referrals": 5,
                            "amount": {"amount_minor": 1000, "currency": "USD"},
                        },
                        {"min_referrals": 5, "amount": {"amount_minor": 1500, "currency": "USD"}},
                    ],
                }
            },
            "advocate.tiers",
        ),
        ({"advocate": {"trigger": "signup"}}, "advocate.amount"),
        ({"advocate": {"trigger": "signup", "amount": {}}}, "advocate.amount"),
        (
            {"advocate": {"trigger": "signup", "amount": {"amount_minor": 5}}},
            "advocate.amount.currency",
        ),
        ({"advocate": {"trigger": "custom", "amount": {"points": 5}}}, "advocate.custom_type"),
        ({"friend": {"trigger": "signup", "kind": "coupon"}}, "friend.coupon_pool_id"),
        (
            {
                "friend": {"trigger": "signup", "amount": {"points": 5}},
                "caps": [{"period": "month", "max_count": 1}],
            },
            "caps",
        ),
        ({**DROPBOX, "budget": {"amount": 5, "unit": "XYZ"}}, "budget.unit"),
        ({}, "advocate"),
        ({"trigger": "signup"}, "advocate_reward"),
    ],
)
def test_cross_field_mistakes_are_named(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        _definition(RewardRuleIn.model_validate(body))
    assert info.value.field == pointer(field)


@pytest.mark.parametrize(
    "amount",
    [
        {"percent": "1e999990", "currency": "USD"},
        {"percent": "1e-999999999", "currency": "USD"},
        {"amount_minor": 10**30, "currency": "USD"},
        {"amount_minor": "1e999990", "currency": "USD"},
        {"points": 10**5000},
        {"percent": "5", "currency": "USD", "max_amount_minor": 10**13},
    ],
)
def test_rule_amounts_are_bounded_and_refused_at_once(amount: dict[str, object]) -> None:
    # The review's "1e999990": a rule amount is refused in microseconds, never computed with.
    started = time.process_time()
    with pytest.raises(ValidationError):
        AmountIn.model_validate(amount)
    assert time.process_time() - started < 0.05


def test_variants_are_tried_by_order_then_as_listed_with_the_rule_as_default() -> None:
    from reward_service.rules.domain import Amount, Cap, RuleDefinition, SideReward, Variant

    def side(n: int) -> tuple[SideReward, ...]:
        return (SideReward("advocate", "signup", Amount("MB", fixed=n)),)

    rule = RuleDefinition(
        hold_days=0,
        rewards=side(1),
        caps=(Cap("lifetime", max_amount=10),),
        variants=(
            Variant("vip", side(2), order=2),
            Variant("plus", side(3), caps=(Cap("lifetime", max_amount=30),), order=1),
            Variant("basic", side(4)),
        ),
    )
    chosen, segment = rule.for_segments(frozenset({"vip", "plus"}))
    assert segment == "plus" and chosen.rewards == side(3)
    assert chosen.caps == (Cap("lifetime", max_amount=30),) and chosen.variants == ()
    assert rule.for_segments(frozenset({"vip", "basic"}))[1] == "vip"
    assert rule.for_segments(frozenset({"basic"}))[1] == "basic"
    default, none = rule.for_segments(frozenset())
    assert none is None and default.rewards == side(1) and default.caps == rule.caps

"""Reward rules and ledger arithmetic, without infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from reward_service import domain
from reward_service.schemas import RewardRuleIn

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _rule(
    trigger: domain.Trigger = "first_purchase",
    hold_days: int = 0,
    amount: int = 2000,
    unit: str = "USD",
    rule_id: str = "rrv_1",
) -> domain.RuleVersion:
    side = domain.SideReward(role="advocate", trigger=trigger, amount_minor=amount, unit=unit)
    return domain.RuleVersion(
        id=rule_id,
        tenant_id="acme",
        program_id="prg_1",
        version=1,
        valid_from=T0,
        definition=domain.RuleDefinition(hold_days=hold_days, rewards=(side,)),
        created_at=T0,
    )


def _conversion(
    conversion_type: str = "purchase",
    first: bool = True,
    conversion_id: str = "cnv_1",
    occurred_at: datetime = T0,
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
    )


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
    ],
)
def test_trigger_matching(
    trigger: domain.Trigger, conversion_type: str, first: bool, expected: bool
) -> None:
    assert domain.trigger_matches(trigger, conversion_type, first) is expected


def test_first_purchase_rule_rewards_the_advocate_immediately_without_hold() -> None:
    [reward] = domain.rewards_earned(_rule(), _conversion())
    assert (reward.holder_type, reward.holder_id, reward.role) == ("advocate", "adv_1", "advocate")
    assert (reward.amount, reward.unit, reward.state) == (2000, "USD", "available")
    assert reward.available_at == T0
    assert reward.id.startswith("rwd_") and len(reward.id) == 4 + 24


def test_non_matching_conversion_earns_nothing() -> None:
    assert domain.rewards_earned(_rule(), _conversion(first=False)) == []
    assert domain.rewards_earned(_rule(), _conversion("signup", first=False)) == []


def test_hold_makes_the_reward_pending_until_occurred_at_plus_hold() -> None:
    [reward] = domain.rewards_earned(_rule(hold_days=30), _conversion())
    assert reward.state == "pending"
    assert reward.available_at == T0 + timedelta(days=30)


def test_naive_occurred_at_is_taken_as_utc() -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    [reward] = domain.rewards_earned(_rule(hold_days=1), _conversion(occurred_at=naive))
    assert reward.available_at == T0 + timedelta(days=1)


def test_ids_derive_from_the_cause() -> None:
    a = domain.rewards_earned(_rule(), _conversion())[0]
    again = domain.rewards_earned(_rule(), _conversion())[0]
    other_conversion = domain.rewards_earned(_rule(), _conversion(conversion_id="cnv_2"))[0]
    other_version = domain.rewards_earned(_rule(rule_id="rrv_2"), _conversion())[0]
    assert a.id == again.id
    assert len({a.id, other_conversion.id, other_version.id}) == 3
    assert domain.earn_transfer(a).id == domain.earn_transfer(again).id
    assert domain.reward_event_id(a.id, "reward.available.v1") == domain.reward_event_id(
        again.id, "reward.available.v1"
    )
    assert domain.reward_event_id(a.id, "reward.available.v1") != domain.reward_event_id(
        a.id, "reward.pending.v1"
    )
    legs = {
        domain.transfer_id("acme", "cnv_1", "rrv_1", role, leg)
        for role in ("advocate", "friend")
        for leg in ("earn", "release")
    }
    assert len(legs) == 4
    assert domain.transfer_id("acme", "cnv_1", "rrv_1", "advocate", "earn") != (
        domain.transfer_id("globex", "cnv_1", "rrv_1", "advocate", "earn")
    )


def test_earn_and_release_move_money_from_liability_to_available() -> None:
    [reward] = domain.rewards_earned(_rule(hold_days=30), _conversion())
    earn = domain.earn_transfer(reward)
    assert (earn.debit.holder_type, earn.debit.kind) == ("program", "liability")
    assert (earn.credit.holder_id, earn.credit.kind) == ("adv_1", "pending")
    release = domain.release_transfer(reward)
    assert release.debit == earn.credit
    assert (release.credit.holder_id, release.credit.kind) == ("adv_1", "available")
    assert release.id != earn.id

    balances: dict[domain.AccountRef, int] = {}
    for t in (earn, release):
        balances[t.debit] = balances.get(t.debit, 0) - t.amount
        balances[t.credit] = balances.get(t.credit, 0) + t.amount
    assert sum(balances.values()) == 0
    assert balances[release.credit] == 2000 and balances[release.debit] == 0


def test_only_a_pending_reward_can_be_released() -> None:
    [reward] = domain.rewards_earned(_rule(hold_days=0), _conversion())
    with pytest.raises(ValueError, match="not pending"):
        domain.release_transfer(reward)


def test_transfer_refuses_bad_shapes() -> None:
    usd = domain.AccountRef("acme", "program", "prg_1", "liability", "USD")
    eur = domain.AccountRef("acme", "advocate", "adv_1", "available", "EUR")
    usd_holder = domain.AccountRef("acme", "advocate", "adv_1", "available", "USD")
    other_tenant = domain.AccountRef("globex", "advocate", "adv_1", "available", "USD")
    tid = domain.transfer_id("acme", "c", "r", "advocate", "earn")

    def transfer(debit: domain.AccountRef, credit: domain.AccountRef, amount: int) -> None:
        domain.Transfer(tid, "acme", debit, credit, amount, "USD", "c", None, "earn")

    transfer(usd, usd_holder, 1)
    for debit, credit, amount in [
        (usd, usd_holder, 0),
        (usd, usd_holder, -5),
        (usd, usd, 1),
        (usd, eur, 1),
        (usd, other_tenant, 1),
    ]:
        with pytest.raises(ValueError):
            transfer(debit, credit, amount)


def test_account_ids_are_stable_and_distinct() -> None:
    a = domain.AccountRef("acme", "advocate", "adv_1", "available", "USD")
    assert a.id == domain.AccountRef("acme", "advocate", "adv_1", "available", "USD").id
    assert a.id != domain.AccountRef("acme", "advocate", "adv_1", "pending", "USD").id
    assert a.id != domain.AccountRef("acme", "advocate", "adv_1", "available", "EUR").id
    assert a.id != domain.AccountRef("globex", "advocate", "adv_1", "available", "USD").id


def test_next_version_never_moves_valid_from_backwards() -> None:
    assert domain.next_version(None, T0) == (1, T0)
    latest = _rule()
    assert domain.next_version(latest, T0 + timedelta(hours=1)) == (2, T0 + timedelta(hours=1))
    assert domain.next_version(latest, T0 - timedelta(seconds=3)) == (2, T0)


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
        (123_456_789_012, "USD", "1234567890.12"),
    ],
)
def test_format_minor(minor: int, unit: str, text: str) -> None:
    assert domain.format_minor(minor, unit) == text


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["USD", "JPY", "BHD"]))
def test_format_minor_is_exact(minor: int, unit: str) -> None:
    assert Decimal(domain.format_minor(minor, unit)).scaleb(domain.exponent(unit)) == minor


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("USD", "USD"),
        ("usd", "USD"),
        (" eur ", "EUR"),
        ("JPY", "JPY"),
        ("XYZ", None),
        ("XXX", None),
        ("XTS", None),
        ("DEM", None),
        ("US", None),
        ("", None),
    ],
)
def test_parse_currency_accepts_only_currencies_in_use(code: str, expected: str | None) -> None:
    assert domain.parse_currency(code) == expected


def test_balances_are_grouped_per_unit() -> None:
    rows = [("USD", "available", 2000), ("USD", "pending", 500), ("EUR", "pending", 100)]
    assert domain.balances(rows) == [
        domain.Balance("EUR", available_minor=0, pending_minor=100),
        domain.Balance("USD", available_minor=2000, pending_minor=500),
    ]
    assert domain.balances([]) == []


def test_rule_body_validation_names_the_field() -> None:
    ok = RewardRuleIn.model_validate(
        {"advocate_reward": {"amount_minor": 2000, "currency": "usd"}, "trigger": "signup"}
    )
    assert ok.advocate_reward.currency == "USD" and ok.hold_days == 0
    bad_bodies = {
        "advocate_reward.currency": {"amount_minor": 2000, "currency": "XYZ"},
        "advocate_reward.amount_minor": {"amount_minor": 0, "currency": "USD"},
    }
    for field, reward in bad_bodies.items():
        with pytest.raises(ValidationError) as info:
            RewardRuleIn.model_validate({"advocate_reward": reward, "trigger": "signup"})
        assert ".".join(map(str, info.value.errors()[0]["loc"])) == field
    for amount in (-1, 20.5, "2000", 10**13):
        with pytest.raises(ValidationError):
            RewardRuleIn.model_validate(
                {
                    "advocate_reward": {"amount_minor": amount, "currency": "USD"},
                    "trigger": "signup",
                }
            )

"""The pure rules of analytics: days, buckets, ranges, leaderboard periods, masked names and
the derived figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from attribution_service.analytics import domain
from attribution_service.analytics.domain import KFactor, Range
from servicekit.problems import InvalidInput


def test_day_of_is_the_zones_calendar_day() -> None:
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert domain.day_of(late) == date(2026, 11, 30)
    assert domain.day_of(late, "Europe/Berlin") == date(2026, 12, 1)
    assert domain.day_of(late.astimezone(timezone(timedelta(hours=5)))) == date(2026, 11, 30)


def test_buckets_cover_the_range_clipped() -> None:
    r = Range(date(2026, 11, 25), date(2027, 1, 3), "month")
    assert r.buckets() == [
        (date(2026, 11, 25), date(2026, 11, 30)),
        (date(2026, 12, 1), date(2026, 12, 31)),
        (date(2027, 1, 1), date(2027, 1, 3)),
    ]
    weeks = Range(date(2026, 11, 4), date(2026, 11, 16), "week").buckets()
    assert weeks[0] == (date(2026, 11, 4), date(2026, 11, 8))  # Wednesday to Sunday
    assert weeks[-1] == (date(2026, 11, 16), date(2026, 11, 16))
    assert len(weeks) == domain.bucket_count(date(2026, 11, 4), date(2026, 11, 16), "week") == 3


def test_query_range_refuses_reversed_and_too_many_buckets() -> None:
    today = date(2026, 12, 2)
    assert domain.query_range(None, None, "day", today) == Range(date(2026, 11, 3), today, "day")
    with pytest.raises(InvalidInput) as e:
        domain.query_range(date(2026, 12, 3), date(2026, 12, 1), "day", today)
    assert e.value.field == "/from"
    start = date(2020, 1, 1)
    assert domain.query_range(start, start + timedelta(days=999), "day", today)
    with pytest.raises(InvalidInput) as e:
        domain.query_range(start, start + timedelta(days=1000), "day", today)
    assert e.value.field == "/interval"
    assert domain.query_range(start, start + timedelta(days=1000), "week", today)


def test_periods() -> None:
    at = datetime(2026, 12, 2, 9, tzinfo=UTC)
    assert domain.period_keys(at) == ["all", "month:2026-12", "week:2026-W49"]
    assert domain.period_key("week", datetime(2027, 1, 1, tzinfo=UTC)) == "week:2026-W53"


def test_metric_key_needs_a_unit_for_earned() -> None:
    assert domain.metric_key("referrals", None) == "referrals"
    assert domain.metric_key("earned", "USD") == "earned:USD"
    with pytest.raises(InvalidInput) as e:
        domain.metric_key("earned", None)
    assert e.value.field == "/unit"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Ann Smith", "Ann S."),
        ("  ann   van der berg ", "ann B."),
        ("Bob", "Bob"),
        (None, "Advocate …1234"),
        ("", "Advocate …1234"),
        ("ann@example.com", "Advocate …1234"),
        ("Ann ann@example.com", "Advocate …1234"),
    ],
)
def test_masked_name_never_shows_an_email(name: str | None, shown: str) -> None:
    assert domain.masked_name(name, "adv_01234") == shown


def test_derived_figures() -> None:
    assert domain.rate(1, 0) is None and domain.rate(1, 4) == 0.25
    assert domain.per_customer(3000, 2) == 1500
    assert domain.per_customer(1001, 2) == 501  # half up
    assert domain.per_customer(5, 0) is None
    assert domain.roi(10000, 3000) == 7000 / 3000 and domain.roi(1, 0) is None
    k = KFactor.of(advocates=4, invites=10, converted=2)
    assert (k.invites_per_advocate, k.invite_conversion_rate, k.k_factor) == (2.5, 0.2, 0.5)
    assert KFactor.of(0, 0, 0) == KFactor(None, None, None)


def test_customer_value_and_clv_by_hand() -> None:
    from attribution_service.analytics.domain import CustomerValue, payback_days

    # 3 customers, 4 purchases, 120.00: AOV 30.00, 4/3 purchases each, value 40.00 per window
    v = CustomerValue.of(
        customers=3, purchases=4, revenue_minor=12000, lifespan_days=45.0, window_days=30
    )
    assert (v.aov_minor, v.purchases_per_customer) == (3000, 4 / 3)
    assert v.customer_value_minor == pytest.approx(4000)
    assert v.clv_minor == pytest.approx(4000 * 1.5)  # 45 days: 1.5 windows of 30
    short = CustomerValue.of(
        customers=1, purchases=1, revenue_minor=500, lifespan_days=1.0, window_days=30
    )
    assert short.clv_minor == 500  # at least one window
    empty = CustomerValue.of(
        customers=0, purchases=0, revenue_minor=0, lifespan_days=None, window_days=30
    )
    assert (empty.aov_minor, empty.customer_value_minor, empty.clv_minor) == (None, None, None)
    assert payback_days(2000, v, 30) == pytest.approx(2000 / (4000 / 30))
    assert payback_days(None, v, 30) is None and payback_days(2000, empty, 30) is None


def test_exact_customer_value_and_clv_by_hand() -> None:
    from decimal import Decimal

    from attribution_service.analytics.domain import (
        CustomerTotals,
        CustomerValue,
        ExactCustomerValue,
    )

    # three customers with lifespans of 10 days, 0 and 35.5 days (first to last purchase):
    # 45.5 days in all, a mean of 45.5 / 3 + 1 = 16.1667 days; 4 purchases for 100.01
    day = 86400
    a = CustomerTotals(1, 2, 6001, Decimal(10 * day))
    b = CustomerTotals(1, 1, 1000, Decimal(0))
    c = CustomerTotals(1, 1, 3000, Decimal(35 * day + day // 2))
    t = a + b + c
    assert t == CustomerTotals(3, 4, 10001, Decimal(3931200))
    v = ExactCustomerValue.of(t, window_days=7)
    assert v.lifespan_days == Decimal("16.1667")
    assert v.aov_minor == 2500  # 10001 / 4 = 2500.25
    assert v.purchases_per_customer == Decimal("1.3333")
    assert v.customer_value_minor == 3334  # 10001 / 3 = 3333.67
    # CLV from the exact value: 10001 / 3 x (48.5 / 3) / 7 = 970097 / 126 = 7699.18, not
    # 3334 x 2.3095 = 7699.95
    assert v.clv_minor == 7699
    # half up at .5: 18001 over 2 customers is 9000.5
    half = ExactCustomerValue.of(CustomerTotals(2, 3, 18001, Decimal(0)), window_days=10)
    assert (half.customer_value_minor, half.clv_minor, half.aov_minor) == (9001, 9001, 6000)
    assert half.lifespan_days == Decimal("1.0000")
    # the float form is the same computation
    f = CustomerValue.of_totals(t, 7)
    assert f.customer_value_minor == pytest.approx(10001 / 3)
    assert f.clv_minor == pytest.approx(970097 / 126)
    none = ExactCustomerValue.of(CustomerTotals(), window_days=7)
    assert (none.lifespan_days, none.aov_minor, none.customer_value_minor, none.clv_minor) == (
        None, None, None, None)  # fmt: skip

"""Merging a run's analytics changes in memory (analytics.folds) gives what folding its events
one by one would, and clicks reach the consumer as runs."""

from __future__ import annotations

from datetime import UTC, date, datetime

from attribution_service.analytics.folds import Folds, score_moves
from attribution_service.consumers import CONSUMERS
from referral_events.contracts import link as ev
from referral_events.inbox import Batched


def t(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


def test_clicks_are_handled_as_runs_by_both_features() -> None:
    handler = CONSUMERS[0].handlers[ev.LinkClicked.TYPE]
    assert isinstance(handler, Batched)


def test_counters_add_and_members_are_a_set() -> None:
    f = Folds()
    d = date(2026, 11, 3)
    for _ in range(3):
        f.add("acme", "p", d, "clicks", 1, channel="email")
        f.add_member("p", "visitor", d, "email", "ip1")
    f.add_for_advocate("p", "a", d, "revenue", 500, unit="EUR")
    f.add_for_advocate("p", "a", d, "revenue", -200, unit="EUR")
    assert f.counters == {("p", d, "email", "clicks", ""): 3}
    assert f.tenants == {"p": "acme"}
    assert f.members == {("p", "visitor", d, "email", "ip1")}
    assert f.advocate_counters == {("p", "a", d, "revenue", "EUR"): 300}


def test_rows_merge_as_the_upserts_would() -> None:
    f = Folds()
    f.advocate("acme", "p", "a", display_name="Ann", first_referral_at=t(5))
    f.advocate("other", "q", "a", first_referral_at=t(2))  # the first insert's tenant stays
    f.advocate("acme", "p", "a", display_name=None, enrolled_at=t(9))
    row = f.advocates["a"]
    assert (row.tenant_id, row.program_id, row.display_name) == ("acme", "p", "Ann")
    assert (row.enrolled_at, row.first_referral_at) == (t(9), t(2))
    f.referral("p", "c1", "a", first_purchase_at=t(7))
    f.referral("p", "c1", "b", referred_at=t(4), first_purchase_at=t(6))
    ref = f.referrals[("p", "c1")]
    assert (ref.advocate_id, ref.referred_at, ref.first_purchase_at) == ("a", t(4), t(6))


def test_scores_sum_per_period_and_counts_move_from_old_to_new() -> None:
    f = Folds()
    f.score("p", "referrals", ["all", "2026-11"], "a", 1)
    f.score("p", "referrals", ["all", "2026-12"], "a", 2)
    f.score("p", "referrals", ["all"], "b", 0)  # nothing moves
    assert f.scores == {
        ("p", "referrals", "all", "a"): 3,
        ("p", "referrals", "2026-11", "a"): 1,
        ("p", "referrals", "2026-12", "a"): 2,
    }
    old = {("p", "referrals", "all", "a"): 4}
    new = {("p", "referrals", "all", "a"): 7, ("p", "referrals", "2026-11", "a"): 1}
    moves = score_moves(old, new, {"a": "x"})
    assert moves == {
        ("p", "referrals", "all", 4, ""): -1,
        ("p", "referrals", "all", 4, "x"): -1,
        ("p", "referrals", "all", 7, ""): 1,
        ("p", "referrals", "all", 7, "x"): 1,
        ("p", "referrals", "2026-11", 1, ""): 1,
        ("p", "referrals", "2026-11", 1, "x"): 1,
    }

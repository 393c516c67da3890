"""The ring rule and its signals, the risk scores, auto-block and time that cannot be faked, as
pure functions (issue #20)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from attribution_service.conversions import fraud
from attribution_service.conversions.fraud import ClickFacts, Facts, Neighbour
from attribution_service.programs.domain import FraudPolicy, RingPolicy

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4-mapped: its IPv4 network
        (None, None),
    ],
)
def test_network_prefix(ip, prefix) -> None:
    assert fraud.network_prefix(ip) == prefix


@pytest.mark.parametrize(
    ("email", "stem", "rare"),
    [
        ("mike1990@gmail.com", "mike@gmail.com", None),
        ("mike.2@gmail.com", "mike@gmail.com", None),
        ("anna.smith@gmail.com", None, None),  # no digits: no stem
        ("a1@initech.example", None, "initech.example"),  # stem too short; a company domain
        ("bob@mailinator.com", None, None),  # disposable: not "rare"
        (None, None, None),
    ],
)
def test_email_signals(email, stem, rare) -> None:
    norm = fraud.normalize_email(email)
    assert fraud.email_stem(norm) == stem
    assert fraud.rare_domain(norm) == rare


def test_addresses_compare_loosely() -> None:
    assert fraud.normalize_address("12, Main St.\n  Springfield") == fraud.normalize_address(
        "12 main st springfield"
    )


def _n(i: int, advocate: str = "adv_1", ago: timedelta = timedelta(minutes=5), **sig: str):
    return Neighbour(f"cnv_{i}", f"cus_{i}", advocate, NOW - ago, sig)


def _facts(neighbours: tuple[Neighbour, ...], **signals: str) -> Facts:
    return Facts(
        conversion_type="signup",
        occurred_at=NOW,
        customer_id="cus_me",
        advocate_customer_id="cus_adv",
        advocate_blocked=False,
        program_status="active",
        id="cnv_me",
        advocate_id="adv_1",
        received_at=NOW,
        signals=signals,
        neighbours=neighbours,
    )


def test_a_cluster_counts_distinct_customers_within_the_window() -> None:
    p = RingPolicy(device=3)
    near = (_n(1, device="d"), _n(2, device="d"))
    [cluster] = fraud.clusters(p, _facts(near, device="d"))
    assert cluster == fraud.Cluster("device", "advocate", 3, ("cnv_1", "cnv_2", "cnv_me"))
    # the same customer twice, the advocate, another value, too long ago: no cluster
    for others in [
        (_n(1, device="d"), Neighbour("cnv_1b", "cus_1", "adv_1", NOW, {"device": "d"})),
        (_n(1, device="d"), Neighbour("cnv_a", "cus_adv", "adv_1", NOW, {"device": "d"})),
        (_n(1, device="d"), _n(2, device="other")),
        (_n(1, device="d"), _n(2, ago=timedelta(hours=25), device="d")),
    ]:
        assert fraud.clusters(p, _facts(others, device="d")) == []


def test_strong_identifiers_count_across_the_workspace_networks_do_not() -> None:
    p = RingPolicy(device=3, network=3)
    spread = (_n(1, "adv_2", device="d", network="n"), _n(2, "adv_3", device="d", network="n"))
    found = fraud.clusters(p, _facts(spread, device="d", network="n"))
    assert [(c.signal, c.scope, c.count) for c in found] == [("device", "workspace", 3)]


def test_the_ring_check_names_the_cluster_and_weighs_in_the_risk_score() -> None:
    near = tuple(_n(i, network="n") for i in range(7))
    screened = {s.name: s for s in fraud.screen(FraudPolicy(), _facts(near, network="n"))}
    ring = screened["ring"]
    assert ring.outcome == "fail" and ring.action == "review"
    assert "8 referrals share one network" in ring.detail and "cnv_0" in ring.detail
    assert ring.clusters[0].count == 8
    assert fraud.verdict(list(screened.values())) == "review"
    assert fraud.risk_score([s.name for s in screened.values() if s.outcome == "fail"]) == 50
    # seven, the default lets through (an office of five and then some)
    fewer = {s.name: s for s in fraud.screen(FraudPolicy(), _facts(near[:6], network="n"))}
    assert fewer["ring"].outcome == "pass"


def test_risk_scores() -> None:
    assert fraud.risk_score([]) == 0
    assert fraud.risk_score(["self_referral", "ring"]) == 100  # capped
    assert fraud.advocate_score(denied=0, flagged=0, max_score=0) == 0
    assert fraud.advocate_score(denied=2, flagged=1, max_score=50) == 48
    assert fraud.advocate_score(denied=20, flagged=0, max_score=0) == 100


def test_auto_block_after_denied_referrals() -> None:
    f = _facts(())
    policy = FraudPolicy.model_validate({"auto_block": {"after_denied": 3}})
    blocked = {s.name: s for s in fraud.screen(policy, replace(f, advocate_denied=3))}
    assert blocked["blocked_advocate"].outcome == "fail"
    assert "3 denied" in blocked["blocked_advocate"].detail
    below = {s.name: s for s in fraud.screen(policy, replace(f, advocate_denied=2))}
    assert below["blocked_advocate"].outcome == "pass"
    assert fraud.counts_against_advocate("rejected", ["self_referral"])
    assert fraud.counts_against_advocate("rejected", ["ring", "review_denied"])
    assert not fraud.counts_against_advocate("rejected", ["inactive_program"])
    assert not fraud.counts_against_advocate("rejected", ["blocked_advocate", "velocity"])
    assert not fraud.counts_against_advocate("review", ["ring"])


def test_too_fast_measures_to_the_arrival_not_a_later_claimed_time() -> None:
    f = Facts(
        conversion_type="signup",
        occurred_at=NOW + timedelta(minutes=4),  # claimed
        received_at=NOW,
        customer_id="cus_me",
        click=ClickFacts(NOW - timedelta(seconds=2)),
    )
    assert f.effective_at == NOW
    [fast] = [s for s in fraud.screen(FraudPolicy(), f) if s.name == "too_fast"]
    assert fast.outcome == "fail" and fast.detail.startswith("2s")


def test_the_ring_lookup_names_only_the_signals_its_batch_has() -> None:
    # every part of a plan is opened and locked on each run: a batch of emails alone reads
    # the email indexes only
    from attribution_service.conversions.repository import _ring_neighbours_sql

    sql = _ring_neighbours_sql(frozenset({"email_stem", "email_domain"}))
    named = {s for s in fraud.SIGNAL_COLUMNS if f"h.signal = '{s}'" in sql}
    assert named == {"email_stem", "email_domain"}
    assert "c.email_stem_hash = v.value" in sql and "c.device_hash = v.value" not in sql
    everything = _ring_neighbours_sql(frozenset(fraud.SIGNAL_COLUMNS))
    assert everything.count("CROSS JOIN LATERAL") == len(fraud.SIGNAL_COLUMNS)

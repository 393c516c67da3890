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
    # the email indexes only, in each statement that reads for the ring rule
    from attribution_service.conversions import repository

    def named(sql: str) -> set[str]:
        return {s for s, c in fraud.SIGNAL_COLUMNS.items() if f"c.{c} = " in sql}

    emails = frozenset({"email_stem", "email_domain"})
    for build in (
        repository._ring_reads_sql,
        repository._contexts_sql,
        repository._insert_conversion_sql,
    ):
        assert named(build(emails)) == emails
        assert named(build(frozenset(fraud.SIGNAL_COLUMNS))) == set(fraud.SIGNAL_COLUMNS)
        assert named(build(frozenset())) == set()


def test_a_ring_read_answers_windows_it_covers_and_keeps_those_sharing_a_signal() -> None:
    from attribution_service.conversions.facts import RingAsk, RingRead

    def doc(id: str, hours_ago: float) -> dict[str, str | None]:
        at = (NOW - timedelta(hours=hours_ago)).isoformat()
        return {"id": id, "customer_id": f"cus_{id}", "advocate_id": "adv_1", "received_at": at}

    rows = [
        {**doc("a", 1), "device_hash": "dev1"},
        {**doc("a", 1), "device_hash": "dev1"},  # read once per signal it shares
        {**doc("b", 30), "device_hash": "dev1"},
        {**doc("c", 2), "ip_prefix_hash": "net9"},  # another value: not this conversion's
        {**doc("me", 0), "device_hash": "dev1"},
    ]
    read = RingRead.of({"ring_low": NOW - timedelta(hours=72), "ring_high": NOW, "ring": rows})
    assert [n.id for n in read.found] == ["a", "b", "c", "me"]

    def ask(hours: int, high: datetime = NOW) -> RingAsk:
        return RingAsk("acme", "me", high - timedelta(hours=hours), high, (("device", "dev1"),))

    assert read.answers(ask(24)) and read.answers(ask(72))
    assert not read.answers(ask(73))  # a longer window: read again
    assert not read.answers(ask(24, NOW + timedelta(seconds=1)))  # another arrival
    assert [n.id for n in read.neighbours(ask(24))] == ["a"]
    assert [n.id for n in read.neighbours(ask(72))] == ["a", "b"]

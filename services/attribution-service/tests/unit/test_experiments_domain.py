"""The pure rules of experiments: the sticky weighted split, weights, the lifecycle, and the
significance readout against a hand computation."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from attribution_service.experiments import domain
from attribution_service.experiments.domain import Variant
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput


def test_split_follows_the_weights_within_2_points_and_is_sticky() -> None:
    variants = [Variant("a", 1), Variant("b", 3)]
    advocates = [new_id("adv") for _ in range(10_000)]
    got = Counter(domain.assign(a, "salt-1", variants) for a in advocates)
    assert abs(got["b"] / 10_000 - 0.75) < 0.02
    # the same inputs in another process (after a restart) give the same variant: it is a
    # function of salt, id and weights only; another salt is another split
    again = [domain.assign(a, "salt-1", list(variants)) for a in advocates]
    assert again == [domain.assign(a, "salt-1", variants) for a in advocates]
    assert domain.assign("adv_fixed", "salt-1", variants) == "b"  # pinned: sha256 is stable
    other = [domain.assign(a, "salt-2", variants) for a in advocates]
    assert other != again
    # a weight of 0 gets nobody
    assert {domain.assign(a, "s", [Variant("x", 0), Variant("y", 5)]) for a in advocates} == {"y"}


def test_weights_must_have_a_positive_total() -> None:
    domain.check_weights([0, 1])
    with pytest.raises(InvalidInput) as e:
        domain.check_weights([0, 0])
    assert e.value.field == "/variants"
    with pytest.raises(InvalidInput) as e:
        domain.check_weights([2, -1])
    assert e.value.field == "/variants/1/weight"


def test_lifecycle() -> None:
    assert domain.transition("draft", "start") == "running"
    assert domain.transition("running", "pause") == "paused"
    assert domain.transition("paused", "start") == "running"
    assert domain.transition("paused", "end") == "ended"
    for status, action in [("draft", "pause"), ("ended", "start"), ("draft", "end")]:
        with pytest.raises(Conflict):
            domain.transition(status, action)  # type: ignore[arg-type]


def test_significance_matches_a_hand_computed_two_proportion_test() -> None:
    # control 30 of 100 referred, variant 50 of 100: pooled p = 0.4,
    # z = 0.2 / sqrt(0.4 * 0.6 * (1/100 + 1/100)) = 2.88675, two-sided p = erfc(z / sqrt 2)
    z = 0.2 / math.sqrt(0.4 * 0.6 * (2 / 100))
    r = domain.significance(("control", 100, 30), ("b", 100, 50))
    assert r.enough_data and r.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert r.p_value == pytest.approx(0.003892, abs=1e-6)
    assert r.significant and r.leader == "b"
    # close rates: not significant, no leader
    r = domain.significance(("control", 200, 40), ("b", 200, 44))
    assert r.enough_data and not r.significant and r.leader is None


def test_no_readout_below_the_minimum_sample() -> None:
    assert not domain.significance(("a", 99, 30), ("b", 100, 50)).enough_data
    assert not domain.significance(("a", 100, 3), ("b", 100, 50)).enough_data
    assert not domain.significance(("a", 100, 97), ("b", 100, 50)).enough_data


def test_the_winner_is_known_only_when_the_readout_says_so() -> None:
    won = domain.Readout(True, 0.001, True, "b")
    lost = domain.Readout(True, 0.001, True, "control")
    unsure = domain.Readout(True, 0.4, False, None)
    few = domain.Readout(False, None, False, None)
    assert domain.winner("control", [("b", won)]) == "b"
    assert domain.winner("control", [("b", lost)]) == "control"
    assert domain.winner("control", [("b", unsure)]) is None
    assert domain.winner("control", [("b", few)]) is None
    # one variant beats the control, another does not differ: the one
    assert domain.winner("control", [("b", won), ("c", unsure)]) == "b"
    # the control beats one and not the other: nothing known
    assert domain.winner("control", [("b", lost), ("c", unsure)]) is None
    assert domain.winner("control", [("b", lost), ("c", lost)]) == "control"
    # two variants each beat the control: they were not compared with each other
    c_won = domain.Readout(True, 0.001, True, "c")
    assert domain.winner("control", [("b", won), ("c", c_won)]) is None


def test_promotion_takes_the_winner_or_force_and_repeats_change_nothing() -> None:
    assert domain.promotion("running", None, "b", "b", force=False)
    assert domain.promotion("paused", None, "a", "b", force=True)
    assert domain.promotion("running", None, "a", None, force=True)
    for known in ("b", None):
        with pytest.raises(Conflict) as e:
            domain.promotion("running", None, "a", known, force=False)
        assert e.value.field == "/variant"
    # the same promotion again: nothing to do, forced or not, whatever the readout says now
    assert not domain.promotion("ended", "a", "a", "b", force=False)
    # another winner after the end, an end without one, a draft: 409 on the status
    for status, promoted in [("ended", "a"), ("ended", None), ("draft", None)]:
        with pytest.raises(Conflict) as e:
            domain.promotion(status, promoted, "b", "b", force=True)
        assert e.value.field == "/status"

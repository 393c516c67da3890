"""Attributes, segment conditions and eligibility (servicekit.audience)."""

from __future__ import annotations

import pytest

from servicekit import audience
from servicekit.problems import InvalidInput

DEFS = audience.definitions({"seats": "number", "renews_on": "date", "beta": "boolean"})


def _field(exc: pytest.ExceptionInfo[InvalidInput]) -> str | None:
    return exc.value.field


def test_unknown_attribute_type_is_refused_at_its_pointer() -> None:
    with pytest.raises(InvalidInput) as exc:
        audience.definitions({"seats": "integer"})
    assert _field(exc) == "/attributes/seats"
    with pytest.raises(InvalidInput) as exc:
        audience.definitions({"plan": "string"})
    assert _field(exc) == "/attributes/plan"


def test_attribute_values_are_typed() -> None:
    got = audience.attributes(
        {"plan": "basic", "country": "de", "tags": ["b", "a", "a"], "seats": 3, "beta": True},
        DEFS,
    )
    assert got == {"plan": "basic", "country": "DE", "tags": ["a", "b"], "seats": 3, "beta": True}
    for bad, where in (
        ({"country": "UK"}, "/attributes/country"),  # GB is the ISO code
        ({"country": "XX"}, "/attributes/country"),
        ({"seats": "3"}, "/attributes/seats"),
        ({"beta": 1}, "/attributes/beta"),
        ({"renews_on": "2026-13-01"}, "/attributes/renews_on"),
        ({"tags": ["ok", ""]}, "/attributes/tags/1"),
        ({"colour": "red"}, "/attributes/colour"),
    ):
        with pytest.raises(InvalidInput) as exc:
            audience.attributes(bad, DEFS)
        assert _field(exc) == where, bad


def test_conditions_match() -> None:
    cond = audience.condition(
        {
            "all": [
                {"attribute": "plan", "in": ["plus", "pro"]},
                {"any": [{"has_tag": "vip"}, {"attribute": "seats", "gte": 10}]},
                {"attribute": "renews_on", "lt": "2027-01-01"},
            ]
        },
        DEFS,
    )
    base = {"plan": "plus", "tags": ["vip"], "renews_on": "2026-06-01"}
    assert cond.matches(base)
    assert not cond.matches({**base, "plan": "basic"})
    assert not cond.matches({**base, "tags": []})
    assert cond.matches({**base, "tags": [], "seats": 12})
    assert not cond.matches({"plan": "plus", "tags": ["vip"]})  # no renews_on: no match
    assert audience.condition_from_json(cond.to_json()) == cond


def test_condition_on_an_undefined_attribute_names_its_pointer() -> None:
    with pytest.raises(InvalidInput) as exc:
        audience.segments(
            [
                {"name": "a", "condition": {"attribute": "plan", "equals": "x"}},
                {"name": "b", "condition": {"any": [{"attribute": "colour", "equals": "red"}]}},
            ],
            DEFS,
        )
    assert _field(exc) == "/segments/1/condition/any/0/attribute"
    with pytest.raises(InvalidInput) as exc:
        audience.condition({"attribute": "plan", "gt": "a"}, DEFS)
    assert _field(exc) == "/condition/gt"


def test_overlap_is_ruled_out_only_for_disjoint_values_of_one_attribute() -> None:
    basic = audience.condition({"attribute": "plan", "equals": "basic"}, DEFS)
    plus = audience.condition({"attribute": "plan", "in": ["plus", "pro"]}, DEFS)
    vip = audience.condition({"has_tag": "vip"}, DEFS)
    assert not audience.could_overlap(basic, plus)
    assert audience.could_overlap(basic, basic)
    assert audience.could_overlap(basic, vip)


def test_eligibility() -> None:
    segs = audience.segments(
        [{"name": "paying", "condition": {"attribute": "plan", "in": ["plus", "pro"]}}], DEFS
    )
    rules = audience.eligibility(
        {
            "enroll": {"segment": "paying", "countries_deny": ["ru"]},
            "friends": {"countries_allow": ["DE", "AT"]},
        },
        segs,
    )
    assert rules.enroll_refusal(segs, {"plan": "plus", "country": "DE"}) is None
    refused = rules.enroll_refusal(segs, {"plan": "plus", "country": "RU"})
    assert refused is not None and refused[:2] == (
        "eligibility.enroll.countries_deny",
        "/attributes/country",
    )
    refused = rules.enroll_refusal(segs, {"plan": "basic"})
    assert refused is not None and refused[0] == "eligibility.enroll.segment"
    assert rules.friend_countries.refuses("AT") is None
    assert rules.friend_countries.refuses("FR") == "countries_allow"
    assert rules.friend_countries.refuses(None) == "countries_allow"
    assert rules.friend_countries.refuses(None, unknown_passes=True) is None
    assert audience.eligibility_from_json(rules.to_json()) == rules
    with pytest.raises(InvalidInput) as exc:
        audience.eligibility({"friends": {"countries_deny": ["DE", "ZZ"]}}, segs)
    assert _field(exc) == "/eligibility/friends/countries_deny/1"
    with pytest.raises(InvalidInput) as exc:
        audience.eligibility({"enroll": {"segment": "nope"}}, segs)
    assert _field(exc) == "/eligibility/enroll/segment"


def test_state_at_folds_changes_by_effective_time() -> None:
    from datetime import UTC, datetime

    t = [datetime(2026, 1, d, tzinfo=UTC) for d in range(1, 6)]
    changes = [
        audience.Change(1, t[0], {"plan": "basic", "country": "DE"}),
        audience.Change(2, t[3], {"country": "AT"}),
        # recorded last, dated before change 2
        audience.Change(3, t[2], {"plan": "plus"}),
    ]
    assert audience.state_at(changes, t[1]) == {"plan": "basic", "country": "DE"}
    assert audience.state_at(changes, t[2]) == {"plan": "plus", "country": "DE"}
    assert audience.state_at(changes, t[4]) == {"plan": "plus", "country": "AT"}
    assert audience.state_at(changes[:1], None) == {"plan": "basic", "country": "DE"}
    assert audience.state_at([audience.Change(4, t[0], {"plan": None})], None) == {}

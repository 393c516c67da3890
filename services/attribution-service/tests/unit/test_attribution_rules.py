"""Attribution rules (evidence precedence, models, window, attachment) as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from attribution_service.conversions import domain, fraud
from attribution_service.conversions.domain import Click, Code, Referral
from attribution_service.programs.domain import Attachment, ProgramSettings

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CLICK = Click("clk_1", "prg_1", "adv_click", NOW - timedelta(days=2))
CODE = Code("JANE20", "prg_1", "adv_code")
REF = Referral("ref_1", "prg_1", "adv_ref", NOW - timedelta(days=10))


def _choose(
    *,
    code: Code | None = None,
    clicks: list[Click] | None = None,
    referrals: list[Referral] | None = None,
    settings: ProgramSettings | None = None,
    type_: str = "purchase",
    at: datetime = NOW,
) -> domain.Choice:
    return domain.choose(
        conversion_type=type_,
        occurred_at=at,
        code=code,
        clicks=clicks or [],
        referrals=referrals or [],
        settings_by_program={"prg_1": settings} if settings else {},
    )


@pytest.mark.parametrize(
    ("code", "clicks", "referrals", "expected"),
    [
        (CODE, [CLICK], [REF], ("code", "adv_code")),
        (None, [CLICK], [REF], ("click", "adv_click")),
        (None, [], [REF], ("existing_referral", "adv_ref")),
        (CODE, [], [], ("code", "adv_code")),
        (None, [], [], None),
    ],
)
def test_evidence_precedence(code, clicks, referrals, expected) -> None:
    cand = _choose(code=code, clicks=clicks, referrals=referrals).candidate
    assert (None if cand is None else (cand.evidence, cand.advocate_id)) == expected


def _click(cid: str, adv: str, days_ago: float) -> Click:
    return Click(cid, "prg_1", adv, NOW - timedelta(days=days_ago))


EARLY, LATE, OLD = _click("c1", "adv_a", 20), _click("c2", "adv_b", 3), _click("c0", "adv_c", 40)


@pytest.mark.parametrize(
    ("settings", "clicks", "advocate"),
    [
        (ProgramSettings(), [EARLY, LATE], "adv_b"),  # last click by default
        (ProgramSettings(model="first_click"), [EARLY, LATE], "adv_a"),
        (ProgramSettings(model="first_click"), [OLD, EARLY, LATE], "adv_a"),  # OLD outside 30d
        (ProgramSettings(model="first_click", window_days=60), [OLD, EARLY, LATE], "adv_c"),
        (ProgramSettings(window_days=10), [EARLY, LATE], "adv_b"),
        (ProgramSettings(window_days=1), [EARLY, LATE], None),  # every click expired: organic
        (ProgramSettings(), [Click("cf", "prg_1", "adv_f", NOW + timedelta(hours=1))], None),
        (ProgramSettings(), [Click("cs", "prg_1", "adv_s", NOW + timedelta(minutes=2))], "adv_s"),
    ],
)
def test_model_and_window(settings, clicks, advocate) -> None:
    choice = _choose(clicks=clicks, settings=settings)
    assert (choice.candidate.advocate_id if choice.candidate else None) == advocate
    window = next(c for c in choice.checks if c.name == "attribution_window")
    assert window.outcome == ("pass" if advocate else "fail")


@pytest.mark.parametrize(
    ("attachment", "prior", "ref_age_days", "attached"),
    [
        (Attachment(mode="first_n", n=1), 0, 10, True),  # first purchase only
        (Attachment(mode="first_n", n=1), 1, 10, False),
        (Attachment(mode="first_n", n=3), 2, 10, True),
        (Attachment(mode="first_n", n=3), 3, 10, False),
        (Attachment(mode="within_months", months=6), 9, 170, True),
        (Attachment(mode="within_months", months=6), 0, 190, False),
        (Attachment(mode="always"), 500, 3000, True),
    ],
)
def test_attachment_policy(attachment, prior, ref_age_days, attached) -> None:
    ref = Referral("ref_1", "prg_1", "adv_ref", NOW - timedelta(days=ref_age_days), prior)
    choice = _choose(referrals=[ref], settings=ProgramSettings(attachment=attachment))
    assert (choice.candidate is not None) == attached
    assert next(c for c in choice.checks if c.name == "attachment").outcome == (
        "pass" if attached else "fail"
    )


def test_attachment_also_bounds_a_resent_click_of_the_same_advocate() -> None:
    ref = Referral("ref_1", "prg_1", "adv_click", NOW - timedelta(days=5), prior_same_type=1)
    settings = ProgramSettings(attachment=Attachment(mode="first_n", n=1))
    assert _choose(clicks=[CLICK], referrals=[ref], settings=settings).candidate is None
    # a different advocate's click is not bound by it (existing-customer screening decides)
    other = Referral("ref_1", "prg_1", "adv_other", NOW - timedelta(days=5), prior_same_type=1)
    assert _choose(clicks=[CLICK], referrals=[other], settings=settings).candidate is not None


@pytest.mark.parametrize(
    ("type_", "custom_types", "attributable"),
    [
        ("purchase", [], True),
        ("signup", [], True),
        ("demo_booked", ["demo_booked"], True),
        ("demo_booked", ["trial_started"], False),
    ],
)
def test_custom_types_must_be_named_by_the_program(type_, custom_types, attributable) -> None:
    choice = _choose(code=CODE, settings=ProgramSettings(custom_types=custom_types), type_=type_)
    assert (choice.candidate is not None) == attributable


@pytest.mark.parametrize(
    "bad",
    [
        {"window_days": 0},
        {"window_days": 366},
        {"model": "linear"},
        {"custom_types": ["purchase"]},
        {"custom_types": ["Bad Name"]},
        {"attachment": {"mode": "first_n", "n": 0}},
    ],
)
def test_settings_are_validated(bad) -> None:
    with pytest.raises(ValueError):
        ProgramSettings.model_validate(bad)


def _facts(**kw: object) -> fraud.Facts:
    base: dict[str, object] = {
        "conversion_type": "purchase",
        "occurred_at": NOW,
        "customer_id": "cus_friend",
        "advocate_customer_id": "cus_adv",
        "advocate_blocked": False,
        "program_status": "active",
    }
    base.update(kw)
    return fraud.Facts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "status"),
    [
        (_facts(), "attributed"),
        (_facts(customer_id="cus_adv"), "rejected"),  # self-referral denies by default
        (_facts(email="x@mailinator.com"), "review"),  # disposable email reviews by default
        (_facts(program_status="paused"), "rejected"),
    ],
)
def test_decide_maps_verdict_to_status(facts, status) -> None:
    decision = domain.settle(_choose(code=CODE), facts)
    assert decision.status == status
    assert decision.fraud_decision == {"attributed": "allow", "review": "review"}.get(
        status, "deny"
    )


def test_explanation_names_evidence_rule_window_and_every_check() -> None:
    decision = domain.settle(_choose(clicks=[CLICK]), _facts())
    exp = domain.explanation(decision)
    assert exp["evidence"]["click_id"] == "clk_1"  # type: ignore[index]
    assert exp["rule"] == "last-click within 30 days"
    assert exp["window_days"] == 30 and exp["decision"] == "allow"
    assert [c["check"] for c in exp["checks"]] == [  # type: ignore[attr-defined]
        "evidence",
        "attribution_window",
        "self_referral",
        "existing_customer",
        "velocity",
        "disposable_email",
        "too_fast",
        "bot_click",
        "blocked_advocate",
        "inactive_program",
    ]


def test_organic_has_no_candidate_and_no_verdict() -> None:
    decision = domain.settle(_choose(), None)
    assert decision.status == "organic" and decision.fraud_decision is None


def test_add_months_clamps_to_month_end() -> None:
    assert domain.add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(
        2026, 2, 28, tzinfo=UTC
    )
    assert domain.add_months(datetime(2026, 11, 15, tzinfo=UTC), 3) == datetime(
        2027, 2, 15, tzinfo=UTC
    )

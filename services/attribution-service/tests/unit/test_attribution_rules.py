from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from attribution_service import domain
from attribution_service.domain import Advocate, Click, Code, Program, Referral

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CLICK = Click("clk_1", "prg_1", "adv_click", NOW - timedelta(days=2), is_bot=False, counts=True)
CODE = Code("JANE20", "prg_1", "adv_code")
REF = Referral("ref_1", "prg_1", "adv_ref")


@pytest.mark.parametrize(
    ("code", "click", "referral", "expected"),
    [
        (CODE, CLICK, REF, ("code", "adv_code")),
        (None, CLICK, REF, ("click", "adv_click")),
        (None, None, REF, ("existing_referral", "adv_ref")),
        (None, None, None, None),
    ],
)
def test_evidence_precedence(code, click, referral, expected) -> None:
    cand = domain.pick_evidence(code, click, referral)
    assert (None if cand is None else (cand.evidence, cand.advocate_id)) == expected


ACTIVE = Program("active", 30)
ADV = Advocate("cus_advocate", blocked=False)


@pytest.mark.parametrize(
    ("click", "program", "advocate", "customer", "status", "reasons"),
    [
        (CLICK, ACTIVE, ADV, "cus_friend", "attributed", []),
        (CLICK, ACTIVE, ADV, "cus_advocate", "rejected", ["self_referral"]),
        (CLICK, Program("paused", 30), ADV, "cus_friend", "rejected", ["program_active"]),
        (
            CLICK,
            ACTIVE,
            Advocate("cus_advocate", True),
            "cus_friend",
            "rejected",
            ["advocate_blocked"],
        ),
        (
            Click("c", "prg_1", "a", NOW - timedelta(days=31), False, True),
            ACTIVE,
            ADV,
            "cus_friend",
            "organic",
            ["attribution_window"],
        ),
        (
            Click("c", "prg_1", "a", NOW - timedelta(days=31), False, True),
            Program("active", 60),
            ADV,
            "cus_friend",
            "attributed",
            [],
        ),
        (
            Click("c", "prg_1", "a", NOW - timedelta(hours=1), True, False),
            ACTIVE,
            ADV,
            "cus_friend",
            "rejected",
            ["bot_click"],
        ),
        (
            Click("c", "prg_1", "a", NOW - timedelta(hours=1), False, False),
            ACTIVE,
            ADV,
            "cus_friend",
            "rejected",
            ["click_counts"],
        ),
        (
            Click("c", "prg_1", "a", NOW + timedelta(days=1), False, True),
            ACTIVE,
            ADV,
            "cus_friend",
            "organic",
            ["attribution_window"],
        ),
    ],
)
def test_decisions(click, program, advocate, customer, status, reasons) -> None:
    cand = domain.pick_evidence(None, click, None)
    decision = domain.decide(
        customer_id=customer, occurred_at=NOW, candidate=cand, program=program, advocate=advocate
    )
    assert decision.status == status
    assert decision.reasons == reasons


def test_no_evidence_is_organic() -> None:
    decision = domain.decide(
        customer_id="c", occurred_at=NOW, candidate=None, program=None, advocate=None
    )
    assert decision.status == "organic" and decision.candidate is None


def test_unknown_program_and_advocate_do_not_reject() -> None:
    cand = domain.pick_evidence(CODE, None, None)
    decision = domain.decide(
        customer_id="c", occurred_at=NOW, candidate=cand, program=None, advocate=None
    )
    assert decision.status == "attributed"
    assert {c.name: c.outcome for c in decision.checks}["program_active"] == "unknown"


def test_explanation_lists_every_check() -> None:
    cand = domain.pick_evidence(None, CLICK, None)
    decision = domain.decide(
        customer_id="f", occurred_at=NOW, candidate=cand, program=ACTIVE, advocate=ADV
    )
    exp = domain.explanation(decision, 30)
    assert exp["evidence"]["click_id"] == "clk_1"  # type: ignore[index]
    assert [c["check"] for c in exp["checks"]] == [  # type: ignore[attr-defined]
        "evidence",
        "attribution_window",
        "self_referral",
        "advocate_blocked",
        "program_active",
        "bot_click",
        "click_counts",
    ]

"""Attribution rules as pure functions: which evidence wins, and whether a conversion is
attributed, rejected or organic, with every check it passed or failed. No I/O here, so the rules
are tested table-driven without infrastructure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

EvidenceKind = Literal["code", "click", "existing_referral"]
Status = Literal["attributed", "rejected", "organic"]
Outcome = Literal["pass", "fail", "unknown"]


@dataclass(frozen=True)
class Click:
    click_id: str
    program_id: str
    advocate_id: str
    clicked_at: datetime
    is_bot: bool
    counts: bool


@dataclass(frozen=True)
class Code:
    code: str
    program_id: str
    advocate_id: str


@dataclass(frozen=True)
class Referral:
    referral_id: str
    program_id: str
    advocate_id: str


@dataclass(frozen=True)
class Program:
    status: str
    window_days: int


@dataclass(frozen=True)
class Advocate:
    customer_id: str
    blocked: bool


@dataclass(frozen=True)
class Candidate:
    evidence: EvidenceKind
    program_id: str
    advocate_id: str
    click: Click | None = None
    referral_id: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    status: Status
    candidate: Candidate | None
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [c.name for c in self.checks if c.outcome == "fail"]


def pick_evidence(
    code: Code | None, click: Click | None, referral: Referral | None
) -> Candidate | None:
    """A code typed at checkout beats a click id, which beats the customer's existing referral."""
    if code is not None:
        return Candidate("code", code.program_id, code.advocate_id)
    if click is not None:
        return Candidate("click", click.program_id, click.advocate_id, click=click)
    if referral is not None:
        return Candidate(
            "existing_referral",
            referral.program_id,
            referral.advocate_id,
            referral_id=referral.referral_id,
        )
    return None


def within_window(click: Click, occurred_at: datetime, window_days: int) -> bool:
    return click.clicked_at <= occurred_at + timedelta(minutes=5) and (
        occurred_at - click.clicked_at <= timedelta(days=window_days)
    )


def decide(
    *,
    customer_id: str,
    occurred_at: datetime,
    candidate: Candidate | None,
    program: Program | None,
    advocate: Advocate | None,
) -> Decision:
    if candidate is None:
        return Decision("organic", None, [Check("evidence", "fail", "no referral evidence")])
    checks: list[Check] = [Check("evidence", "pass", candidate.evidence)]

    if candidate.click is not None:
        window = program.window_days if program else 30
        if not within_window(candidate.click, occurred_at, window):
            # An expired click is no evidence at all, not a reason to reject the customer.
            checks.append(Check("attribution_window", "fail", f"{window} days"))
            return Decision("organic", None, checks)
        checks.append(Check("attribution_window", "pass", f"{window} days"))

    if advocate is None:
        checks.append(Check("self_referral", "unknown", "advocate not seen yet"))
    elif advocate.customer_id == customer_id:
        checks.append(Check("self_referral", "fail", "friend is the advocate"))
    else:
        checks.append(Check("self_referral", "pass"))

    if advocate is not None:
        checks.append(Check("advocate_blocked", "fail" if advocate.blocked else "pass"))

    if program is None:
        checks.append(Check("program_active", "unknown", "program not seen yet"))
    else:
        active = program.status == "active"
        checks.append(Check("program_active", "pass" if active else "fail", program.status))

    if candidate.click is not None:
        checks.append(Check("bot_click", "fail" if candidate.click.is_bot else "pass"))
        if not candidate.click.is_bot:
            checks.append(Check("click_counts", "pass" if candidate.click.counts else "fail"))

    status: Status = "rejected" if any(c.outcome == "fail" for c in checks) else "attributed"
    return Decision(status, candidate, checks)


def explanation(decision: Decision, window_days: int | None) -> dict[str, object]:
    cand = decision.candidate
    return {
        "evidence": None
        if cand is None
        else {
            "kind": cand.evidence,
            "advocate_id": cand.advocate_id,
            "program_id": cand.program_id,
            "click_id": cand.click.click_id if cand.click else None,
            "referral_id": cand.referral_id,
        },
        "model": "last_click",
        "window_days": window_days,
        "checks": [
            {"check": c.name, "outcome": c.outcome, "detail": c.detail} for c in decision.checks
        ],
    }

"""Attribution rules as pure functions: which evidence wins, whether the conversion falls inside
the window and the program's attachment policy, and (with fraud.py) whether it is allowed,
reviewed or denied, with every check it passed or failed. No I/O here, so the rules are tested
table-driven without infrastructure."""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from attribution_service.conversions import fraud
from attribution_service.programs.domain import (
    BUILTIN_TYPES,
    DEFAULT_SETTINGS,
    Action,
    Attachment,
    Model,
    ProgramSettings,
)

EvidenceKind = Literal["code", "click", "existing_referral"]
Status = Literal["attributed", "review", "rejected", "organic"]
Outcome = Literal["pass", "fail", "unknown", "off"]
# A click may be stamped a little after the conversion that names it (clock skew between
# link-service and the merchant); beyond this it cannot have caused the conversion.
CLOCK_SKEW = timedelta(minutes=5)


def code_key(code: str) -> str:
    """Codes compare case-insensitively, as link-service keys them."""
    return code.strip().upper()


@dataclass(frozen=True)
class Click:
    click_id: str
    program_id: str
    advocate_id: str
    clicked_at: datetime
    is_bot: bool = False
    counts: bool = True
    ip_hash: str | None = None
    device_class: str | None = None
    inactive_reason: str | None = None


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
    created_at: datetime
    # attributed conversions of the type being decided, before this one
    prior_same_type: int = 0


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
    action: Action | None = None
    # the ring rule's: the clusters that made it fail
    clusters: tuple[fraud.Cluster, ...] = ()


@dataclass(frozen=True)
class Decision:
    status: Status
    candidate: Candidate | None
    checks: list[Check] = field(default_factory=list)
    rule: str = ""
    window_days: int | None = None
    model: Model | None = None

    @property
    def reasons(self) -> list[str]:
        return [c.name for c in self.checks if c.outcome == "fail"]

    @property
    def risk_score(self) -> int:
        """0-100, from the fraud checks that fired (a conversion without a candidate: 0)."""
        if self.candidate is None:
            return 0
        return fraud.risk_score([c.name for c in self.checks if c.outcome == "fail"])

    @property
    def fraud_decision(self) -> fraud.Verdict | None:
        for verdict, status in _STATUS.items():
            if status == self.status:
                return verdict
        return None


def pick_click(
    clicks: Sequence[Click], occurred_at: datetime, settings: ProgramSettings
) -> Click | None:
    """First or last click (per the program's model) among the customer's clicks that fall
    inside the window; clicks in the future (beyond clock skew) never count."""
    usable = [c for c in clicks if within_window(c, occurred_at, settings.window_days)]
    if not usable:
        return None
    usable.sort(key=lambda c: c.clicked_at)
    return usable[0] if settings.model == "first_click" else usable[-1]


def within_window(click: Click, occurred_at: datetime, window_days: int) -> bool:
    return click.clicked_at <= occurred_at + CLOCK_SKEW and (
        occurred_at - click.clicked_at <= timedelta(days=window_days)
    )


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


def add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year = moment.year + month // 12
    month = month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def still_attached(referral: Referral, attachment: Attachment, occurred_at: datetime) -> bool:
    """Whether the program's policy still attributes this referred customer's conversions."""
    if attachment.mode == "first_n":
        return referral.prior_same_type < attachment.n
    if attachment.mode == "within_months":
        return occurred_at <= add_months(referral.created_at, attachment.months)
    return True


def attachment_detail(attachment: Attachment) -> str:
    if attachment.mode == "first_n":
        return f"first {attachment.n} of each type"
    if attachment.mode == "within_months":
        return f"within {attachment.months} months of the referral"
    return "always"


@dataclass(frozen=True)
class Choice:
    """The evidence chosen for a conversion (None: organic) and the checks that chose it."""

    candidate: Candidate | None
    checks: list[Check]
    settings: ProgramSettings
    rule: str


def choose(
    *,
    conversion_type: str,
    occurred_at: datetime,
    code: Code | None,
    clicks: Sequence[Click],
    referrals: Sequence[Referral],
    settings_by_program: Mapping[str, ProgramSettings],
) -> Choice:
    """Which advocate, if any, a conversion belongs to, before fraud screening."""
    checks: list[Check] = []

    def settings(program_id: str) -> ProgramSettings:
        return settings_by_program.get(program_id, DEFAULT_SETTINGS)

    # Clicks: the model and window of the program the newest click belongs to.
    click: Click | None = None
    if clicks:
        newest = max(clicks, key=lambda c: c.clicked_at)
        s = settings(newest.program_id)
        click = pick_click([c for c in clicks if c.program_id == newest.program_id], occurred_at, s)
        detail = f"{s.window_days} days, {s.model}"
        checks.append(Check("attribution_window", "pass" if click else "fail", detail))

    referral: Referral | None = None
    if code is None and click is None:
        # The most recent referral whose program's policy still attaches the customer.
        for ref in sorted(referrals, key=lambda r: r.created_at, reverse=True):
            att = settings(ref.program_id).attachment
            ok = still_attached(ref, att, occurred_at)
            checks.append(Check("attachment", "pass" if ok else "fail", attachment_detail(att)))
            if ok:
                referral = ref
                break

    candidate = pick_evidence(code, click, referral)
    if candidate is None:
        if not checks:
            checks.append(Check("evidence", "fail", "no referral evidence"))
        return Choice(None, checks, DEFAULT_SETTINGS, "no usable evidence: organic")

    s = settings(candidate.program_id)
    checks.insert(0, Check("evidence", "pass", candidate.evidence))

    # A new code or click of the advocate the friend is already attached to still obeys the
    # attachment policy, or recurring rewards could be stretched by re-sending an old click.
    existing = next((r for r in referrals if r.program_id == candidate.program_id), None)
    if (
        candidate.evidence != "existing_referral"
        and existing is not None
        and existing.advocate_id == candidate.advocate_id
        and existing.prior_same_type > 0
    ):
        ok = still_attached(existing, s.attachment, occurred_at)
        checks.append(
            Check("attachment", "pass" if ok else "fail", attachment_detail(s.attachment))
        )
        if not ok:
            return Choice(None, checks, s, "attachment ended: organic")

    if conversion_type not in BUILTIN_TYPES:
        known = conversion_type in s.custom_types
        checks.append(Check("conversion_type", "pass" if known else "fail", conversion_type))
        if not known:
            return Choice(None, checks, s, "type not named by the program: organic")

    rule = {
        "code": "a code typed at checkout beats a click and an existing referral",
        "click": f"{s.model.replace('_', '-')} within {s.window_days} days",
        "existing_referral": f"existing referral, attached {attachment_detail(s.attachment)}",
    }[candidate.evidence]
    return Choice(candidate, checks, s, rule)


_STATUS: dict[fraud.Verdict, Status] = {
    "allow": "attributed",
    "review": "review",
    "deny": "rejected",
}


def settle(choice: Choice, facts: fraud.Facts | None) -> Decision:
    """Screen the chosen candidate (facts gathered for it) and settle the status."""
    s = choice.settings
    if choice.candidate is None or facts is None:
        return Decision("organic", None, choice.checks, choice.rule, s.window_days, s.model)
    screened = fraud.screen(s.fraud, facts)
    checks = [
        *choice.checks,
        *(Check(c.name, c.outcome, c.detail, c.action, c.clusters) for c in screened),
    ]
    status = _STATUS[fraud.verdict(screened)]
    return Decision(status, choice.candidate, checks, choice.rule, s.window_days, s.model)


def explanation(decision: Decision, *, note: str | None = None) -> dict[str, object]:
    cand = decision.candidate
    out: dict[str, object] = {
        "evidence": None
        if cand is None
        else {
            "kind": cand.evidence,
            "advocate_id": cand.advocate_id,
            "program_id": cand.program_id,
            "click_id": cand.click.click_id if cand.click else None,
            "clicked_at": cand.click.clicked_at.isoformat() if cand.click else None,
            "referral_id": cand.referral_id,
        },
        "rule": decision.rule,
        "model": decision.model,
        "window_days": decision.window_days,
        "decision": decision.fraud_decision,
        "risk_score": decision.risk_score,
        "checks": [
            {"check": c.name, "outcome": c.outcome, "detail": c.detail, "action": c.action}
            | ({"clusters": [k.as_json() for k in c.clusters]} if c.clusters else {})
            for c in decision.checks
        ],
    }
    if note:
        out["note"] = note
    return out

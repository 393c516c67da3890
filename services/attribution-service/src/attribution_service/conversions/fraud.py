"""Fraud screening as pure functions: a policy per program (each check on or off, with its
action and thresholds) applied to facts gathered about one conversion. The verdict is the
strictest action among failed checks: deny > review > allow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS

from attribution_service.programs.domain import (
    Action,
    CheckPolicy,
    FraudPolicy,
    SelfReferralPolicy,
    TooFastPolicy,
    VelocityPolicy,
)
from servicekit.keyedhash import matches

Verdict = Literal["allow", "review", "deny"]
Outcome = Literal["pass", "fail", "unknown", "off"]


@dataclass(frozen=True)
class Sighting:
    """Where the advocate was seen converting themselves (their own signups and orders)."""

    seen_at: datetime
    ip_hash: str | None = None
    device_hash: str | None = None


@dataclass(frozen=True)
class ClickFacts:
    clicked_at: datetime
    is_bot: bool = False
    ip_hash: str | None = None
    inactive_reason: str | None = None


@dataclass(frozen=True)
class Facts:
    conversion_type: str
    occurred_at: datetime
    customer_id: str
    email: str | None = None
    ip_hash: str | None = None
    device_hash: str | None = None
    # The same under the previous hash key, during a rotation (servicekit.keyedhash).
    ip_hash_previous: str | None = None
    device_hash_previous: str | None = None
    click: ClickFacts | None = None
    # None: the advocate's copy has not arrived from link.events yet.
    advocate_customer_id: str | None = None
    advocate_email: str | None = None
    advocate_blocked: bool | None = None
    advocate_sightings: tuple[Sighting, ...] = ()
    marked_existing: bool = False
    # The customer's earliest conversion that is not part of this advocate's referral.
    converted_before: datetime | None = None
    # None: the program's copy has not arrived yet.
    program_status: str | None = None
    program_starts_at: datetime | None = None
    program_ends_at: datetime | None = None
    # Counts of earlier conversions, not including this one.
    advocate_conversions_hour: int = 0
    advocate_conversions_day: int = 0
    signups_same_ip_day: int = 0
    signups_same_device_day: int = 0


@dataclass(frozen=True)
class Screened:
    name: str
    outcome: Outcome
    detail: str
    action: Action | None


# Providers that deliver "j.o.e+shop@gmail.com" to "joe@gmail.com": dots ignored (Gmail only),
# +tags ignored (sub-addressing), and domain aliases.
_DOTS_IGNORED = frozenset({"gmail.com"})
_PLUS_TAGS = frozenset(
    {
        "gmail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "icloud.com",
        "me.com",
        "protonmail.com",
        "proton.me",
        "fastmail.com",
    }
)
_DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}


def normalize_email(email: str | None) -> str | None:
    """The mailbox an address reaches: case folded, and dots and +tags removed where the
    provider ignores them."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().lower().rpartition("@")
    domain = _DOMAIN_ALIASES.get(domain, domain)
    if domain in _PLUS_TAGS:
        local = local.split("+", 1)[0]
    if domain in _DOTS_IGNORED:
        local = local.replace(".", "")
    return f"{local}@{domain}"


def is_disposable(email: str | None) -> bool:
    if not email or "@" not in email:
        return False
    domain = email.rsplit("@", 1)[1].strip().lower()
    parts = domain.split(".")
    # sub.mailinator.com is as disposable as mailinator.com
    return any(".".join(parts[i:]) in DISPOSABLE_DOMAINS for i in range(len(parts) - 1))


def _self_referral(p: SelfReferralPolicy, f: Facts) -> tuple[Outcome, str]:
    if f.advocate_customer_id is None:
        return "unknown", "advocate not seen yet"
    if f.customer_id == f.advocate_customer_id:
        return "fail", "same customer id"
    mine, theirs = normalize_email(f.email), normalize_email(f.advocate_email)
    if mine and theirs and mine == theirs:
        return "fail", "same email after normalisation"
    anchor = f.click.clicked_at if f.click else f.occurred_at
    window = timedelta(hours=p.network_window_hours)
    click_ip = f.click.ip_hash if f.click else None
    for s in f.advocate_sightings:
        if abs(s.seen_at - anchor) > window:
            continue
        if matches(s.ip_hash, f.ip_hash, f.ip_hash_previous) or matches(s.ip_hash, click_ip):
            return "fail", f"advocate's IP hash within {p.network_window_hours}h of the click"
        if matches(s.device_hash, f.device_hash, f.device_hash_previous):
            return "fail", f"advocate's device within {p.network_window_hours}h of the click"
    return "pass", ""


def _existing_customer(f: Facts) -> tuple[Outcome, str]:
    if f.marked_existing:
        return "fail", "the merchant marks the customer as existing"
    anchor = f.click.clicked_at if f.click else f.occurred_at
    if f.converted_before is not None and f.converted_before < anchor:
        return "fail", "converted before the referral"
    return "pass", ""


def _velocity(p: VelocityPolicy, f: Facts) -> tuple[Outcome, str]:
    if f.advocate_conversions_hour + 1 > p.per_advocate_hour:
        return "fail", f"more than {p.per_advocate_hour} conversions for the advocate in an hour"
    if f.advocate_conversions_day + 1 > p.per_advocate_day:
        return "fail", f"more than {p.per_advocate_day} conversions for the advocate in a day"
    if f.conversion_type == "signup":
        if f.ip_hash and f.signups_same_ip_day + 1 > p.signups_per_ip_day:
            return "fail", f"more than {p.signups_per_ip_day} signups from one IP hash in a day"
        if f.device_hash and f.signups_same_device_day + 1 > p.signups_per_device_day:
            return "fail", f"more than {p.signups_per_device_day} signups from one device in a day"
    return "pass", ""


def _too_fast(p: TooFastPolicy, f: Facts) -> tuple[Outcome, str]:
    if f.click is None:
        return "pass", "no click"
    seconds = (f.occurred_at - f.click.clicked_at).total_seconds()
    if seconds < p.min_seconds:
        return "fail", f"{max(seconds, 0):.0f}s after the click (minimum {p.min_seconds}s)"
    return "pass", f"{seconds:.0f}s after the click"


def _bot_click(f: Facts) -> tuple[Outcome, str]:
    if f.click is None:
        return "pass", "no click"
    if f.click.is_bot or f.click.inactive_reason == "bot":
        return "fail", "the click was flagged as a bot"
    return "pass", ""


def _blocked(f: Facts) -> tuple[Outcome, str]:
    if f.click is not None and f.click.inactive_reason == "advocate_blocked":
        return "fail", "the advocate was blocked when clicked"
    if f.advocate_blocked is None:
        return "unknown", "advocate not seen yet"
    return ("fail", "the advocate is blocked") if f.advocate_blocked else ("pass", "")


def _inactive(f: Facts) -> tuple[Outcome, str]:
    if f.click is not None and f.click.inactive_reason == "program_inactive":
        return "fail", "the program was inactive when clicked"
    if f.program_status is None:
        return "unknown", "program not seen yet"
    if f.program_status != "active":
        return "fail", f"program is {f.program_status}"
    if f.program_starts_at and f.occurred_at < f.program_starts_at:
        return "fail", "before the program starts"
    if f.program_ends_at and f.occurred_at >= f.program_ends_at:
        return "fail", "after the program ended"
    return "pass", "active"


def screen(policy: FraudPolicy, facts: Facts) -> list[Screened]:
    """Every check in a fixed order, each with its outcome; disabled checks say "off"."""
    p = policy
    table: list[tuple[str, CheckPolicy, tuple[Outcome, str]]] = [
        ("self_referral", p.self_referral, _self_referral(p.self_referral, facts)),
        ("existing_customer", p.existing_customer, _existing_customer(facts)),
        ("velocity", p.velocity, _velocity(p.velocity, facts)),
        (
            "disposable_email",
            p.disposable_email,
            ("fail", "disposable email domain") if is_disposable(facts.email) else ("pass", ""),
        ),
        ("too_fast", p.too_fast, _too_fast(p.too_fast, facts)),
        ("bot_click", p.bot_click, _bot_click(facts)),
        ("blocked_advocate", p.blocked_advocate, _blocked(facts)),
        ("inactive_program", p.inactive_program, _inactive(facts)),
    ]
    return [
        Screened(name, outcome, detail, cp.action)
        if cp.enabled
        else Screened(name, "off", "disabled by the program's policy", None)
        for name, cp, (outcome, detail) in table
    ]


def verdict(screened: list[Screened]) -> Verdict:
    actions = {s.action for s in screened if s.outcome == "fail"}
    if "deny" in actions:
        return "deny"
    return "review" if "review" in actions else "allow"

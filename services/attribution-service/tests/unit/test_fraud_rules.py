"""Fraud screening as pure, table-driven functions: each check, its thresholds, on/off, and the
verdict (deny > review > allow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from attribution_service.conversions import fraud
from attribution_service.conversions.fraud import ClickFacts, Facts, Sighting
from attribution_service.programs.domain import (
    DisposableEmailPolicy,
    FraudPolicy,
    SelfReferralPolicy,
    VelocityPolicy,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CLICKED = NOW - timedelta(hours=2)


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {
        "conversion_type": "purchase",
        "occurred_at": NOW,
        "customer_id": "cus_friend",
        "email": "friend@example.com",
        "click": ClickFacts(CLICKED, ip_hash="ip_friend"),
        "advocate_customer_id": "cus_adv",
        "advocate_email": "Ann.Smith@gmail.com",
        "advocate_blocked": False,
        "program_status": "active",
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def outcome(name: str, f: Facts, policy: FraudPolicy | None = None) -> tuple[str, str]:
    s = next(s for s in fraud.screen(policy or FraudPolicy(), f) if s.name == name)
    return s.outcome, s.detail


@pytest.mark.parametrize(
    ("email", "normalised"),
    [
        ("Ann.Smith+shop@Gmail.com", "annsmith@gmail.com"),
        ("a.n.n.smith@googlemail.com", "annsmith@gmail.com"),
        ("ann.smith+x@outlook.com", "ann.smith@outlook.com"),  # dots matter at Outlook
        ("Ann.Smith+x@example.com", "ann.smith+x@example.com"),  # unknown provider: case only
        ("not-an-email", None),
        (None, None),
    ],
)
def test_email_normalisation(email, normalised) -> None:
    assert fraud.normalize_email(email) == normalised


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, "pass"),
        ({"customer_id": "cus_adv"}, "fail"),
        ({"email": "annsmith+promo@googlemail.com"}, "fail"),
        ({"email": "a.n.n.s.m.i.t.h@gmail.com"}, "fail"),
        ({"advocate_customer_id": None}, "unknown"),
        # advocate seen (their own order) on the click's IP within 24h of the click
        ({"advocate_sightings": (Sighting(CLICKED - timedelta(hours=3), "ip_friend"),)}, "fail"),
        ({"advocate_sightings": (Sighting(CLICKED - timedelta(days=3), "ip_friend"),)}, "pass"),
        ({"device_hash": "dev1", "advocate_sightings": (Sighting(CLICKED, None, "dev1"),)}, "fail"),
        ({"ip_hash": "ip_conv", "advocate_sightings": (Sighting(CLICKED, "ip_conv"),)}, "fail"),
        # IP_HASH_KEY rotation: sightings stored under the previous key match the conversion's
        # hashes under that key, computed only while the previous key is configured
        (
            {
                "ip_hash": "ip_new",
                "ip_hash_previous": "ip_old",
                "advocate_sightings": (Sighting(CLICKED, "ip_old"),),
            },
            "fail",
        ),
        ({"ip_hash": "ip_new", "advocate_sightings": (Sighting(CLICKED, "ip_old"),)}, "pass"),
        (
            {
                "device_hash": "dev_new",
                "device_hash_previous": "dev_old",
                "advocate_sightings": (Sighting(CLICKED, None, "dev_old"),),
            },
            "fail",
        ),
    ],
)
def test_self_referral(kw, expected) -> None:
    assert outcome("self_referral", facts(**kw))[0] == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, "pass"),
        ({"marked_existing": True}, "fail"),
        ({"converted_before": CLICKED - timedelta(days=1)}, "fail"),
        ({"converted_before": CLICKED + timedelta(minutes=1)}, "pass"),
    ],
)
def test_existing_customer(kw, expected) -> None:
    assert outcome("existing_customer", facts(**kw))[0] == expected


STRICT = FraudPolicy(
    velocity=VelocityPolicy(
        per_advocate_hour=3, per_advocate_day=5, signups_per_ip_day=2, signups_per_device_day=2
    )
)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"advocate_conversions_hour": 2, "advocate_conversions_day": 2}, "pass"),
        ({"advocate_conversions_hour": 3, "advocate_conversions_day": 3}, "fail"),
        ({"advocate_conversions_hour": 0, "advocate_conversions_day": 5}, "fail"),
        ({"conversion_type": "signup", "ip_hash": "ip", "signups_same_ip_day": 1}, "pass"),
        ({"conversion_type": "signup", "ip_hash": "ip", "signups_same_ip_day": 2}, "fail"),
        ({"conversion_type": "purchase", "ip_hash": "ip", "signups_same_ip_day": 9}, "pass"),
        ({"conversion_type": "signup", "device_hash": "d", "signups_same_device_day": 2}, "fail"),
    ],
)
def test_velocity(kw, expected) -> None:
    assert outcome("velocity", facts(**kw), STRICT)[0] == expected


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("friend@example.com", "pass"),
        ("friend@mailinator.com", "fail"),
        ("friend@sub.mailinator.com", "fail"),
        ("friend@gmail.com", "pass"),
    ],
)
def test_disposable_email(email, expected) -> None:
    assert outcome("disposable_email", facts(email=email))[0] == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(2, "fail"), (9, "fail"), (10, "pass"), (3600, "pass")],
)
def test_too_fast(seconds, expected) -> None:
    click = ClickFacts(NOW - timedelta(seconds=seconds))
    assert outcome("too_fast", facts(click=click))[0] == expected


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("bot_click", {"click": ClickFacts(CLICKED, is_bot=True)}, "fail"),
        ("bot_click", {"click": ClickFacts(CLICKED, inactive_reason="bot")}, "fail"),
        ("bot_click", {"click": None}, "pass"),
        ("blocked_advocate", {"advocate_blocked": True}, "fail"),
        ("blocked_advocate", {"advocate_blocked": None}, "unknown"),
        (
            "blocked_advocate",
            {"click": ClickFacts(CLICKED, inactive_reason="advocate_blocked")},
            "fail",
        ),
        ("inactive_program", {"program_status": "ended"}, "fail"),
        ("inactive_program", {"program_status": None}, "unknown"),
        ("inactive_program", {"program_ends_at": NOW - timedelta(days=1)}, "fail"),
        ("inactive_program", {"program_starts_at": NOW + timedelta(days=1)}, "fail"),
        ("inactive_program", {"program_starts_at": NOW - timedelta(days=1)}, "pass"),
        (
            "inactive_program",
            {"click": ClickFacts(CLICKED, inactive_reason="program_inactive")},
            "fail",
        ),
    ],
)
def test_bot_blocked_inactive(name, kw, expected) -> None:
    assert outcome(name, facts(**kw))[0] == expected


@pytest.mark.parametrize(
    ("kw", "policy", "verdict"),
    [
        ({}, FraudPolicy(), "allow"),
        ({"customer_id": "cus_adv"}, FraudPolicy(), "deny"),
        ({"email": "x@mailinator.com"}, FraudPolicy(), "review"),
        # deny wins over review
        ({"email": "x@mailinator.com", "advocate_blocked": True}, FraudPolicy(), "deny"),
        # a check switched off never fails
        (
            {"customer_id": "cus_adv"},
            FraudPolicy(self_referral=SelfReferralPolicy(enabled=False)),
            "allow",
        ),
        # its action is configurable
        (
            {"customer_id": "cus_adv"},
            FraudPolicy(self_referral=SelfReferralPolicy(action="review")),
            "review",
        ),
        (
            {"email": "x@mailinator.com"},
            FraudPolicy(disposable_email=DisposableEmailPolicy(action="deny")),
            "deny",
        ),
        ({"advocate_customer_id": None, "program_status": None}, FraudPolicy(), "allow"),
    ],
)
def test_verdict(kw, policy, verdict) -> None:
    assert fraud.verdict(fraud.screen(policy, facts(**kw))) == verdict


def test_disabled_checks_say_off() -> None:
    policy = FraudPolicy(velocity=VelocityPolicy(enabled=False))
    assert outcome("velocity", facts(advocate_conversions_hour=999), policy)[0] == "off"

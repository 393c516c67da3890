from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from link_service.portal import domain
from servicekit.problems import InvalidInput, Unauthorized

KEYS = ["k" * 32, "o" * 32]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _claims(**over: object) -> domain.AdvocateClaims:
    base: dict[str, object] = {
        "tenant_id": "acme",
        "program_id": "prg_1",
        "advocate_id": "adv_1",
        "expires_at": NOW + timedelta(hours=1),
    }
    return domain.AdvocateClaims(**{**base, **over})  # type: ignore[arg-type]


def test_a_token_round_trips_and_either_key_verifies() -> None:
    token = domain.mint(_claims(), KEYS, NOW)
    assert domain.verify(token, KEYS, NOW) == _claims()
    # Rotation: the old key (now second) still verifies what it signed.
    old = domain.mint(_claims(), KEYS[1:], NOW)
    assert domain.verify(old, KEYS, NOW).advocate_id == "adv_1"
    with pytest.raises(Unauthorized):
        domain.verify(old, KEYS[:1], NOW)


def test_expired_tampered_and_unsigned_tokens_are_refused() -> None:
    token = domain.mint(_claims(expires_at=NOW + timedelta(seconds=60)), KEYS, NOW)
    with pytest.raises(Unauthorized, match="expired"):
        domain.verify(token, KEYS, NOW + timedelta(seconds=61))
    unsigned = jwt.encode({"sub": "adv_1"}, None, algorithm="none")
    # Signed with a real key but malformed: refused, never an error.
    for exp in ("soon", 10**20, None):
        body = {
            "iss": "link-service",
            "aud": "advocate",
            "sub": "adv_1",
            "tid": "acme",
            "pid": "prg_1",
            "scope": "me:read",
            "iat": 0,
            "exp": exp,
        }
        odd = jwt.encode(body, KEYS[0], algorithm="HS256", headers={"kid": domain.key_id(KEYS[0])})
        with pytest.raises(Unauthorized):
            domain.verify(odd, KEYS, NOW)
    for bad in (None, "", unsigned, token[:-2] + "xx", "a.b.c"):
        with pytest.raises(Unauthorized):
            domain.verify(bad, KEYS, NOW)


def test_verified_tokens_keep_the_claims_but_not_past_expiry_nor_refusals() -> None:
    tokens = domain.VerifiedTokens(KEYS, size=2)
    token = domain.mint(_claims(expires_at=NOW + timedelta(seconds=60)), KEYS, NOW)
    first = tokens.verify(token, NOW)
    assert tokens.verify(token, NOW + timedelta(seconds=59)) is first  # no second check
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token, NOW + timedelta(seconds=60))
    # A refusal is not remembered: the same bytes are refused each time, and so is a token
    # verified by another replica's keys.
    forged = domain.mint(_claims(), ["x" * 32], NOW)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            tokens.verify(forged, NOW)
    with pytest.raises(Unauthorized):
        domain.VerifiedTokens(KEYS[1:]).verify(token, NOW)
    with pytest.raises(Unauthorized, match="missing"):
        tokens.verify(None, NOW)
    # Bounded: past `size` tokens it starts over, and still answers each.
    others = [domain.mint(_claims(advocate_id=f"adv_{i}"), KEYS, NOW) for i in range(3)]
    assert [tokens.verify(t, NOW).advocate_id for t in others] == ["adv_0", "adv_1", "adv_2"]
    assert len(tokens._claims) <= 2


def test_ttl_defaults_and_bounds() -> None:
    assert domain.token_ttl(None, 3600) == timedelta(hours=1)
    assert domain.token_ttl(86_400, 3600) == timedelta(hours=24)
    with pytest.raises(InvalidInput):
        domain.token_ttl(86_401, 3600)


def test_origins_are_normalised_and_matched_exactly() -> None:
    assert domain.normalise_origin("HTTPS://Shop.Example.com/", "/o") == "https://shop.example.com"
    assert domain.normalise_origin("http://localhost:3000", "/o") == "http://localhost:3000"
    for bad in ("shop.example.com", "https://shop.example.com/path", "ftp://x.example"):
        with pytest.raises(InvalidInput):
            domain.normalise_origin(bad, "/o")
    assert domain.origin_allowed("https://a.example", ["https://a.example"])
    assert not domain.origin_allowed("https://a.example.evil", ["https://a.example"])
    assert not domain.origin_allowed(None, ["https://a.example"])


def test_friends_are_masked() -> None:
    assert domain.mask_friend("bob.smith@example.com", "cus_1") == "b•••@e•••.com"
    assert "bob" not in domain.mask_friend("bob@mail.example.org", "cus_1")
    assert domain.mask_friend(None, "cus_abcd12") == "Friend 12•••"
    assert domain.mask_friend(None, "c1") == "Friend •••"


def test_status_and_enrollment_rules() -> None:
    flags = {"signed_up": True, "purchased": True, "rewarded": True, "refunded": False}
    assert domain.referral_status(**flags) == "rewarded"
    assert domain.referral_status(**{**flags, "refunded": True}) == "refunded"
    assert domain.referral_status(**dict.fromkeys(flags, False)) == "clicked"
    assert domain.enrolls_friend("purchase", "purchase")
    assert not domain.enrolls_friend("purchase", "signup")
    assert domain.enrolls_friend("signup", "signup")
    assert not domain.enrolls_friend("off", "purchase")


def test_reminders_stop_at_the_maximum_or_once_shared() -> None:
    step = domain.reminder_step
    kw = {"shared": False, "consent": True, "blocked": False}
    assert step(sent=0, max_reminders=2, **kw) == domain.ReminderStep(send=True, done=False)
    assert step(sent=1, max_reminders=2, **kw) == domain.ReminderStep(send=True, done=True)
    assert step(sent=2, max_reminders=2, **kw) == domain.ReminderStep(send=False, done=True)
    assert step(sent=3, max_reminders=2, **kw).send is False  # the maximum was lowered
    for stop in ({"shared": True}, {"consent": False}, {"blocked": True}):
        assert step(sent=0, max_reminders=3, **{**kw, **stop}) == domain.ReminderStep(
            send=False, done=True
        )

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from link_service import domain
from link_service.config import Settings
from link_service.redirect import cache as code_cache
from link_service.redirect import front as redirect
from link_service.redirect import state as link_state
from link_service.redirect.cache import CodeCache, CodeTarget

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)

# ---------------------------------------------------------------------------- codes


def test_code_keys_are_case_insensitive() -> None:
    assert domain.code_key(" jane20 ") == domain.code_key("JANE20") == "JANE20"


# ---------------------------------------------------------------------------- programs


def test_program_is_live_only_when_active_and_inside_its_window() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    day = timedelta(days=1)
    assert domain.program_is_live("active", None, None, now)
    assert domain.program_is_live("active", now - day, now + day, now)
    assert not domain.program_is_live("active", now + day, None, now)
    assert not domain.program_is_live("active", None, now, now)  # the end is exclusive
    for status in ("draft", "paused", "ended"):
        assert not domain.program_is_live(status, None, None, now)


# ---------------------------------------------------------------------------- redirect


ALLOWED = ("example.com", "shop.example.com")


@pytest.mark.parametrize(
    ("deep_link", "expected"),
    [
        (None, "https://shop.example.com/join?x=1"),
        ("/products/42?c=red", "https://shop.example.com/products/42?c=red"),
        ("https://blog.example.com/post", "https://blog.example.com/post"),
        ("https://evil.com/", "https://shop.example.com/join?x=1"),
        ("//evil.com/x", "https://shop.example.com/join?x=1"),
        ("/\\evil.com", "https://shop.example.com/join?x=1"),
        ("https://example.com.evil.com/", "https://shop.example.com/join?x=1"),
        ("https://user@evil.com@example.com/", "https://shop.example.com/join?x=1"),
        ("javascript:alert(1)", "https://shop.example.com/join?x=1"),
        ("ftp://example.com/", "https://shop.example.com/join?x=1"),
        # not URLs at all (urlsplit raises): the landing URL, never a 500 (issue #21)
        ("http://[", "https://shop.example.com/join?x=1"),
        ("https://[::1/x", "https://shop.example.com/join?x=1"),
        ("http://[zz]/", "https://shop.example.com/join?x=1"),
    ],
)
def test_deep_links_never_leave_the_allowed_domains(deep_link: str | None, expected: str) -> None:
    assert domain.redirect_target("https://shop.example.com/join?x=1", ALLOWED, deep_link) == (
        expected
    )


def test_landing_url_keeps_its_query_and_gets_ref_and_click_id() -> None:
    url = domain.landing_url_for_click(
        "https://shop.example.com/join?src=ref&ref=old&utm_source=site",
        "JANE20",
        "clk_1",
        [("utm_source", "x"), ("utm_medium", "referral")],
    )
    assert parse_qsl(urlsplit(url).query) == [
        ("src", "ref"),
        ("utm_source", "site"),
        ("utm_medium", "referral"),
        ("ref", "JANE20"),
        ("click_id", "clk_1"),
    ]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://shop.example.com", "https://shop.example.com/?ref=JANE20&click_id=clk_1"),
        ("https://shop.example.com?x=1", "https://shop.example.com/?x=1&ref=JANE20&click_id=clk_1"),
        ("https://shop.example.com#top", "https://shop.example.com/?ref=JANE20&click_id=clk_1#top"),
        (
            "https://shop.example.com/join",
            "https://shop.example.com/join?ref=JANE20&click_id=clk_1",
        ),
    ],
)
def test_a_landing_url_without_a_path_gets_one_before_its_query(target: str, expected: str) -> None:
    assert domain.landing_url_for_click(target, "JANE20", "clk_1") == expected
    prefix, fragment = domain.click_url_parts(target)
    assert f"{prefix}ref=JANE20&click_id=clk_1{fragment}" == expected


def test_user_agents_are_classified() -> None:
    desktop = domain.classify_user_agent(CHROME_DESKTOP)
    assert (desktop.user_agent_family, desktop.device_class, desktop.is_bot) == (
        "Chrome",
        "desktop",
        False,
    )
    assert domain.classify_user_agent(IPHONE).device_class == "mobile"
    assert domain.classify_user_agent(IPAD).device_class == "tablet"
    for bot in (
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Twitterbot/1.0",
        "WhatsApp/2.23.20.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ):
        info = domain.classify_user_agent(bot)
        assert info.is_bot and info.device_class == "bot", bot
    assert domain.classify_user_agent(None).device_class == "unknown"


def test_ip_is_only_kept_as_keyed_hash() -> None:
    h = domain.ip_hash(b"key-one-123", "203.0.113.9")
    assert h is not None and "203" not in h and len(h) == 64
    assert h != domain.ip_hash(b"key-two-123", "203.0.113.9")
    assert domain.referrer_host("https://Mail.Google.com/x?y") == "mail.google.com"
    assert domain.referrer_host("not a url") is None


# ---------------------------------------------------------------------------- cache


def _target(code: str, program: str = "prg_1", advocate: str = "adv_1") -> CodeTarget:
    return CodeTarget(
        code, "acme", program, advocate, "active", None, None, "https://a.example", None, (), False
    )


def test_cache_is_bounded_and_invalidated_by_owner() -> None:
    cache = CodeCache(maxsize=2, ttl=60, negative_ttl=60)
    cache.put("A", _target("A", advocate="adv_a"), cache.generation)
    cache.put("B", _target("B", advocate="adv_b"), cache.generation)
    cache.get("A")
    cache.put("C", _target("C", program="prg_2", advocate="adv_c"), cache.generation)
    assert cache.get("B") == (False, None)  # least recently used went
    assert cache.get("A")[0] and cache.get("C")[0]
    cache.invalidate_advocate("adv_a")
    assert cache.get("A") == (False, None)
    cache.invalidate_program("prg_2")
    assert cache.get("C") == (False, None)
    cache.put("NOPE", None, cache.generation)
    assert cache.get("NOPE") == (True, None)  # remembered as unknown
    cache.invalidate_codes(["nope"])
    assert cache.get("NOPE") == (False, None)


def test_cache_refuses_a_fill_that_raced_an_invalidation() -> None:
    cache = CodeCache(maxsize=10, ttl=60, negative_ttl=60)
    seen = cache.generation
    cache.invalidate_advocate("adv_1")  # an event arrived while the lookup was in flight
    cache.put("A", _target("A"), seen)
    assert cache.get("A") == (False, None)


def test_cache_entries_expire() -> None:
    cache = CodeCache(maxsize=10, ttl=0.000001, negative_ttl=0)
    cache.put("A", _target("A"), cache.generation)
    assert cache.get("A") == (False, None)


def test_expired_entries_answer_stale_within_grace_and_expiries_are_spread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(code_cache.time, "monotonic", lambda: now[0])
    cache = CodeCache(maxsize=1000, ttl=60, negative_ttl=2)
    for i in range(200):
        cache.put(f"C{i}", _target(f"C{i}"), cache.generation)
    now[0] += 45  # within the shortest jittered TTL (0.8 x 60)
    assert all(cache.get(f"C{i}")[0] for i in range(200))
    now[0] += 13  # 58 s: some have expired, not all (loaded together, expiring apart)
    fresh = sum(cache.get(f"C{i}")[0] for i in range(200))
    assert 0 < fresh < 200
    now[0] += 10  # 68 s: all expired, each still answers stale in its grace period
    assert not any(cache.get(f"C{i}")[0] for i in range(200))
    assert all(cache.stale(f"C{i}") is not None for i in range(200))
    cache.invalidate_codes(["C0"])  # an event: never served stale after it
    assert cache.stale("C0") is None
    now[0] += 60  # past TTL + grace: gone
    assert cache.get("C1") == (False, None)
    assert cache.stale("C1") is None


async def test_lookups_share_one_query_per_code_and_expiry_refreshes_behind_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = link_state.LinkState(Settings(code_cache_ttl_seconds=60))
    queries: list[str] = []
    release = asyncio.Event()

    async def fetch(key: str) -> CodeTarget | None:
        queries.append(key)
        await release.wait()
        target = _target(key)
        state.cache.put(key, target, state.cache.generation)
        return target

    monkeypatch.setattr(state, "_fetch", fetch)
    waiting = [asyncio.create_task(state.lookup("ABC")) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting)
    assert queries == ["ABC"]  # fifty concurrent misses, one query
    assert all(r is not None and r.code == "ABC" for r in results)

    # Expired 1 s ago, within grace (the loop's clock is time.monotonic: not patched here).
    state.cache._entries["ABC"] = (time.monotonic() - 1, results[0])
    release.clear()
    answered = await asyncio.wait_for(state.lookup("ABC"), timeout=1)  # not held by the query
    assert answered is not None and answered.code == "ABC"
    assert queries == ["ABC", "ABC"]  # one refresh started behind the answer
    release.set()
    await asyncio.sleep(0.01)
    assert state.cache.get("ABC")[0]  # refreshed


# ---------------------------------------------------------------------------- hot-path shortcuts


@pytest.mark.parametrize(
    "target",
    [
        "https://shop.example.com/join",
        "https://shop.example.com/join?src=ref&ref=old&x=a+b",
        "https://shop.example.com/join?src=ref#signup",
        "https://shop.example.com/?click_id=stale",
        "https://shop.example.com",
        "https://shop.example.com?src=ref#signup",
        "https://shop.example.com#signup",
    ],
)
def test_precomputed_click_urls_equal_the_general_builder(target: str) -> None:
    prefix, fragment = domain.click_url_parts(target)
    fast = f"{prefix}ref=JANE-20&click_id=clk_0123abcd{fragment}"
    assert fast == domain.landing_url_for_click(target, "JANE-20", "clk_0123abcd")


def test_hand_built_click_event_equals_the_contract_model() -> None:
    from referral_events import CloudEvent
    from referral_events.contracts.link import LinkClicked
    from referral_events.envelope import new_event

    now = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    row = (
        "clk_1", "acme", "JANE20", "prg_1", "adv_1", "x", now, "Chrome", "desktop",
        "mail.google.com", "ab" * 32, False, False, "advocate_blocked",
    )  # fmt: skip
    raw = redirect.click_event_json(row, "acme")
    event = CloudEvent.from_json(raw)
    expected = new_event(
        LinkClicked(
            click_id="clk_1",
            code="JANE20",
            advocate_id="adv_1",
            program_id="prg_1",
            clicked_at=now,
            channel="x",
            user_agent_family="Chrome",
            device_class="desktop",
            referrer_host="mail.google.com",
            ip_hash="ab" * 32,
            is_bot=False,
            counts=False,
            inactive_reason="advocate_blocked",
        ),
        source="/services/link-service",
        tenant_id="acme",
        event_id="clk_1",
        subject="JANE20",
        time=now,
    )
    assert event == expected
    assert LinkClicked.model_validate(event.data) == LinkClicked.model_validate(expected.data)
    assert json.loads(raw) == json.loads(expected.to_json())


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [
        # the ingress appended the visitor's address; the client wrote what is left of it
        (b"6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),
        (b"203.0.113.9", 1, "203.0.113.9"),
        # a cloud load balancer in front of the ingress: two trusted hops
        (b"6.6.6.6, 203.0.113.9, 10.0.0.2", 2, "203.0.113.9"),
        # fewer entries than trusted hops, or none: the TCP peer
        (b"203.0.113.9", 2, "10.1.1.1"),
        (None, 1, "10.1.1.1"),
    ],
)
def test_the_client_ip_is_the_hop_the_trusted_proxy_added(
    forwarded: bytes | None, hops: int, expected: str
) -> None:
    # The review: the leftmost X-Forwarded-For entry was used, which the client controls.
    from link_service.redirect.front import client_ip

    headers = {b"x-forwarded-for": forwarded} if forwarded else {}
    scope = {"client": ("10.1.1.1", 5000)}
    assert client_ip(scope, headers, b"x-forwarded-for", hops) == expected  # type: ignore[arg-type]

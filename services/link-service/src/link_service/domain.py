"""Pure rules that more than one area of link-service applies: what a code is, when a program
is live, share links, and the redirect's URL and click rules. Rules of one area live in its
package (programs.domain, advocates.domain, enrollment.domain). No I/O, so they are unit-tested
without infrastructure."""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from crawlerdetect import CrawlerDetect
from ua_parser import parse as parse_user_agent

from servicekit.keyedhash import keyed_hash

# No look-alikes (0/O, 1/I/L): codes are read aloud and typed at checkouts.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LOOK_ALIKES = frozenset("0O1IL")
DEFAULT_CODE_LENGTH = 8
# Any code a link may carry (random, vanity, prefixed); anything else is a 404 without a lookup.
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,39}$")

Channel = Literal["email", "sms", "whatsapp", "facebook", "x", "linkedin", "copy"]
SHARE_CHANNELS: tuple[Channel, ...] = get_args(Channel)
# What a program's share templates may fill in (programs validate them, advocates render them).
TEMPLATE_PLACEHOLDERS = frozenset({"link", "code", "name", "program"})


# ---------------------------------------------------------------------------- codes


@dataclass(frozen=True)
class CodeFormat:
    length: int = DEFAULT_CODE_LENGTH
    alphabet: str = CODE_ALPHABET
    prefix: str = ""


def generate_code(fmt: CodeFormat) -> str:
    # secrets: codes are bearer tokens of a kind (they earn money), so never a guessable PRNG.
    return fmt.prefix + "".join(secrets.choice(fmt.alphabet) for _ in range(fmt.length))


def code_key(code: str) -> str:
    """Codes compare case-insensitively."""
    return code.strip().upper()


def is_well_formed_code(code: str) -> bool:
    return bool(CODE_PATTERN.fullmatch(code))


# ---------------------------------------------------------------------------- programs


def program_is_live(
    status: str, starts_at: datetime | None, ends_at: datetime | None, now: datetime
) -> bool:
    """Active and inside its window: only then can its clicks and conversions earn."""
    if status != "active":
        return False
    if starts_at is not None and now < starts_at:
        return False
    return not (ends_at is not None and now >= ends_at)


def inactive_reason(
    *,
    program_live: bool,
    advocate_blocked: bool,
    is_bot: bool = False,
) -> str | None:
    """Why a click cannot earn (None when it can)."""
    if is_bot:
        return "bot"
    if not program_live:
        return "program_inactive"
    if advocate_blocked:
        return "advocate_blocked"
    return None


def host_allowed(host: str, allowed_domains: list[str] | tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allowed_domains)


# ---------------------------------------------------------------------------- share links


@dataclass(frozen=True)
class Links:
    """The service's public side, as handlers need it."""

    base_url: str

    def link(self, code: str) -> str:
        """The advocate's plain link (no channel), as events and API answers carry it."""
        return share_link(self.base_url, code, None, "")


def share_link(base_url: str, code: str, channel: str | None, campaign: str) -> str:
    """The public link for one channel, UTM-tagged so the landing page's analytics see where
    the visit came from (the redirect forwards utm_* to the landing URL)."""
    path = f"{base_url.rstrip('/')}/r/{quote(code)}"
    if channel is None:
        return path
    utm = {"utm_source": channel, "utm_medium": "referral", "utm_campaign": campaign}
    return f"{path}/{channel}?{urlencode(utm)}"


# ---------------------------------------------------------------------------- redirect


def redirect_target(
    landing_url: str,
    allowed_domains: tuple[str, ...],
    deep_link: str | None,
) -> str:
    """Where a redirect goes: the landing URL, or a deep link that stays on an allowed domain
    (a path on the landing host, or an absolute URL on an allowed domain). Anything else is
    ignored, so the redirect can never be pointed at a foreign site."""
    if not deep_link:
        return landing_url
    if "\\" in deep_link or any(ord(c) < 0x21 for c in deep_link):
        return landing_url
    if deep_link.startswith("/") and not deep_link.startswith("//"):
        base = urlsplit(landing_url)
        candidate = urlunsplit((base.scheme, base.netloc, "", "", "")) + deep_link
    else:
        candidate = deep_link
    try:
        parts = urlsplit(candidate)
        hostname, username = parts.hostname, parts.username
    except ValueError:  # "http://[" and the like: not a URL at all
        return landing_url
    if parts.scheme not in ("http", "https") or not hostname or username:
        return landing_url
    if not host_allowed(hostname, allowed_domains):
        return landing_url
    return candidate


def _with_path(parts: SplitResult) -> SplitResult:
    """`https://shop.example.com` as `https://shop.example.com/`: a query needs a path before
    it (RFC 3986's normal form; `host?ref=` is read wrongly by some clients and analytics)."""
    return parts._replace(path="/") if parts.netloc and not parts.path else parts


def landing_url_for_click(
    target: str, code: str, click_id: str | None, extra: list[tuple[str, str]] | None = None
) -> str:
    """The target with `ref` and `click_id` added, its own query kept; `extra` (utm_* from the
    share link) only adds keys the target does not set itself."""
    parts = _with_path(urlsplit(target))
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("ref", "click_id")
    ]
    own = {k for k, _ in query}
    query += [(k, v) for k, v in extra or [] if k not in own]
    query.append(("ref", code))
    if click_id is not None:
        query.append(("click_id", click_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def click_url_parts(target: str) -> tuple[str, str]:
    """`target` split so a click's URL is `prefix + "ref=…&click_id=…" + fragment`: the same
    URL landing_url_for_click builds, with the parsing done once per target, not per click."""
    parts = _with_path(urlsplit(target))
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("ref", "click_id")
        ]
    )
    base = urlunsplit(parts._replace(query="", fragment=""))
    prefix = f"{base}?{query}&" if query else f"{base}?"
    return prefix, f"#{parts.fragment}" if parts.fragment else ""


def ip_hash(key: bytes, ip: str | None) -> str | None:
    """A click's IP hash: servicekit.keyedhash's, the one attribution-service compares with."""
    return keyed_hash(key, ip)


def referrer_host(referrer: str | None) -> str | None:
    if not referrer:
        return None
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host.lower() if host else None


@dataclass(frozen=True)
class ClientInfo:
    user_agent_family: str | None
    device_class: str
    is_bot: bool


_crawler_detect: CrawlerDetect | None = None


@functools.lru_cache(maxsize=16384)
def classify_user_agent(user_agent: str | None) -> ClientInfo:
    """Browser family, device class (mobile/tablet/desktop/bot/unknown) and whether it is a
    crawler or link previewer. Cached: parsing a new string costs milliseconds, and real
    traffic repeats a small set of strings."""
    global _crawler_detect
    if not user_agent:
        return ClientInfo(None, "unknown", False)
    if _crawler_detect is None:
        _crawler_detect = CrawlerDetect()
    is_bot = bool(_crawler_detect.isCrawler(user_agent))
    parsed = parse_user_agent(user_agent[:1000])
    family = parsed.user_agent.family if parsed.user_agent else None
    device = parsed.device
    os_family = parsed.os.family if parsed.os else ""
    ua = user_agent.lower()
    if is_bot or (device is not None and device.family == "Spider"):
        device_class = "bot"
        is_bot = True
    elif _is_tablet(device.brand if device else None, os_family, ua):
        device_class = "tablet"
    elif os_family in ("iOS", "Android", "Windows Phone", "KaiOS") or "mobi" in ua:
        device_class = "mobile"
    elif os_family and os_family != "Other":
        device_class = "desktop"
    else:
        device_class = "unknown"
    return ClientInfo(family if family != "Other" else None, device_class, is_bot)


def _is_tablet(brand: str | None, os_family: str, ua: str) -> bool:
    if brand and "tablet" in brand.lower():
        return True
    if any(t in ua for t in ("ipad", "tablet", "kindle", "silk/")):
        return True
    # Android phones say "Mobile"; Android tablets do not.
    return os_family == "Android" and "mobile" not in ua

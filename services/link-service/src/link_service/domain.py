"""Pure rules of programs, codes, links and clicks: no I/O, so they are unit-tested without
infrastructure."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from crawlerdetect import CrawlerDetect
from ua_parser import parse as parse_user_agent

from servicekit.problems import InvalidInput

# No look-alikes (0/O, 1/I/L): codes are read aloud and typed at checkouts.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LOOK_ALIKES = frozenset("0O1IL")
DEFAULT_CODE_LENGTH = 8
# Any code a link may carry (random, vanity, prefixed); anything else is a 404 without a lookup.
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,39}$")
PREFIX_PATTERN = re.compile(r"^[A-Z2-9]{1,10}-?$")
# Random codes must leave enough room that a collision retry is rare even for big programs.
MIN_CODE_SPACE = 10**9

SHARE_CHANNELS = ("email", "sms", "whatsapp", "facebook", "x", "linkedin", "copy")
DEFAULT_SHARE_TEMPLATE = "Join me at {program} and we both get a reward: {link}"
TEMPLATE_PLACEHOLDERS = frozenset({"link", "code", "name", "program"})
_PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")
_BRACED = re.compile(r"\{([^{}]*)\}")


# ---------------------------------------------------------------------------- code format


@dataclass(frozen=True)
class CodeFormat:
    length: int = DEFAULT_CODE_LENGTH
    alphabet: str = CODE_ALPHABET
    prefix: str = ""


def validate_code_format(length: int, alphabet: str, prefix: str) -> CodeFormat:
    """A program's random-code format, or InvalidInput naming the offending field."""
    if alphabet != alphabet.upper() or not alphabet.isalnum() or not alphabet.isascii():
        raise InvalidInput(
            "alphabet must be upper-case letters and digits (codes compare case-insensitively)",
            field="code_format.alphabet",
        )
    if len(set(alphabet)) != len(alphabet):
        raise InvalidInput("alphabet repeats a character", field="code_format.alphabet")
    bad = sorted(set(alphabet) & LOOK_ALIKES)
    if bad:
        raise InvalidInput(
            f"alphabet contains look-alike characters {''.join(bad)} (0/O, 1/I/L)",
            field="code_format.alphabet",
        )
    if len(alphabet) < 10:
        raise InvalidInput("alphabet needs at least 10 characters", field="code_format.alphabet")
    if not 4 <= length <= 24:
        raise InvalidInput("length must be between 4 and 24", field="code_format.length")
    if len(alphabet) ** length < MIN_CODE_SPACE:
        raise InvalidInput(
            f"{len(alphabet)}^{length} codes are too few to draw from; raise the length",
            field="code_format.length",
        )
    prefix = prefix.upper()
    if prefix and not PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidInput(
            "prefix is 1-10 letters/digits without look-alikes, optionally ending in '-'",
            field="code_format.prefix",
        )
    if set(prefix.rstrip("-")) & LOOK_ALIKES:
        raise InvalidInput("prefix contains look-alike characters", field="code_format.prefix")
    if len(prefix) + length > 40:
        raise InvalidInput("prefix and length exceed 40 characters", field="code_format.prefix")
    return CodeFormat(length=length, alphabet=alphabet, prefix=prefix)


def generate_code(fmt: CodeFormat) -> str:
    # secrets: codes are bearer tokens of a kind (they earn money), so never a guessable PRNG.
    return fmt.prefix + "".join(secrets.choice(fmt.alphabet) for _ in range(fmt.length))


def code_key(code: str) -> str:
    """Codes compare case-insensitively."""
    return code.strip().upper()


def is_well_formed_code(code: str) -> bool:
    return bool(CODE_PATTERN.fullmatch(code))


# ---------------------------------------------------------------------------- vanity codes

VANITY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){3,19}$")
# Words a code must not be: paths and names that would mislead people or collide with routes.
_RESERVED = """
    ADMIN ADMINISTRATOR API APP AUTH BILLING DOCS HELP HEALTHZ INFO LOGIN LOGOUT METRICS
    MODERATOR NULL OFFICIAL OPENAPI PASSWORD R READYZ REFERRAL ROOT SECURITY SIGNIN SIGNUP
    STAFF STATIC STATUS SUPPORT SYSTEM TEST UNDEFINED V1 V2 WWW
"""
RESERVED_WORDS = frozenset(_RESERVED.split())
# Leetspeak spellings; "1" may stand for i or l, so both readings are checked.
_LEET_I = str.maketrans("0134578@$92", "oieastbasgz")
_LEET_L = str.maketrans("0134578@$92", "oleastbasgz")


@functools.cache
def _offensive_words() -> tuple[frozenset[str], frozenset[str]]:
    """better-profanity's word list: (all words, words long enough to match inside a code)."""
    text = (resources.files("better_profanity") / "profanity_wordlist.txt").read_text("utf-8")
    words = frozenset(w.strip().lower() for w in text.splitlines() if w.strip())
    # Short words ("ass", "tit") hide inside harmless ones ("class", "title"), so they only
    # count as a whole word or a whole segment, never as a substring.
    return words, frozenset(w for w in words if len(w) >= 4 and " " not in w)


def is_offensive(code: str) -> bool:
    whole, embeddable = _offensive_words()
    lowered = code.lower()
    readings = {lowered, lowered.translate(_LEET_I), lowered.translate(_LEET_L)}
    for reading in readings:
        letters = re.sub(r"[^a-z]", "", reading)
        segments = [s for s in re.split(r"[^a-z]+", reading) if s]
        if letters in whole or any(s in whole for s in segments):
            return True
        if any(w in letters for w in embeddable):
            return True
    return False


def validate_vanity_code(code: str) -> str:
    """The vanity code as the advocate typed it (case kept), or InvalidInput on `code`."""
    code = code.strip()
    if not VANITY_PATTERN.fullmatch(code):
        raise InvalidInput(
            "a vanity code is 4-20 letters or digits, single dashes between them",
            field="code",
        )
    if code_key(code).replace("-", "") in RESERVED_WORDS:
        raise InvalidInput(f"'{code}' is a reserved word", field="code")
    if is_offensive(code):
        raise InvalidInput(f"'{code}' is not allowed (offensive word list)", field="code")
    return code


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


ALLOWED_STATUS_CHANGES = {
    "draft": {"draft", "active", "paused", "ended"},
    "active": {"active", "paused", "ended"},
    "paused": {"paused", "active", "ended"},
    "ended": {"ended"},
}


def check_status_change(old: str, new: str) -> None:
    if new not in ALLOWED_STATUS_CHANGES[old]:
        raise InvalidInput(f"a program cannot go from {old} to {new}", field="status")


def check_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidInput("ends_at must be after starts_at", field="ends_at")


def _absolute_http_url(url: str, field: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field} must be an absolute http(s) URL", field=field)
    return url


def host_allowed(host: str, allowed_domains: list[str] | tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allowed_domains)


def normalize_domains(
    landing_url: str, allowed_domains: list[str] | None, fallback_url: str | None = None
) -> list[str]:
    """The landing URL's host is always allowed; every domain is lower-case without a dot.
    The fallback URL must be on an allowed domain too: a program never sends people elsewhere."""
    _absolute_http_url(landing_url, "landing_url")
    host = urlsplit(landing_url).hostname
    assert host is not None
    domains = {host.lower()}
    for d in allowed_domains or []:
        d = d.strip().lower().rstrip(".")
        if not d or not re.fullmatch(r"[a-z0-9.-]+", d) or d.startswith("."):
            raise InvalidInput(f"'{d}' is not a domain name", field="allowed_domains")
        domains.add(d)
    if fallback_url is not None:
        _absolute_http_url(fallback_url, "fallback_url")
        fb_host = urlsplit(fallback_url).hostname or ""
        if not host_allowed(fb_host, sorted(domains)):
            raise InvalidInput("fallback_url must be on an allowed domain", field="fallback_url")
    return sorted(domains)


def validate_share_templates(templates: dict[str, str]) -> dict[str, str]:
    for channel, template in templates.items():
        if channel not in SHARE_CHANNELS:
            raise InvalidInput(
                f"unknown share channel '{channel}' (one of {', '.join(SHARE_CHANNELS)})",
                field=f"share_templates.{channel}",
            )
        if not template.strip() or len(template) > 1000:
            raise InvalidInput(
                "a template is 1-1000 characters", field=f"share_templates.{channel}"
            )
        unknown = set(_BRACED.findall(template)) - TEMPLATE_PLACEHOLDERS
        if unknown:
            raise InvalidInput(
                f"unknown placeholder {{{sorted(unknown)[0]}}}; use "
                + ", ".join("{" + p + "}" for p in sorted(TEMPLATE_PLACEHOLDERS)),
                field=f"share_templates.{channel}",
            )
    return templates


# ---------------------------------------------------------------------------- share links


def share_link(base_url: str, code: str, channel: str | None, campaign: str) -> str:
    """The public link for one channel, UTM-tagged so the landing page's analytics see where
    the visit came from (the redirect forwards utm_* to the landing URL)."""
    path = f"{base_url.rstrip('/')}/r/{quote(code)}"
    if channel is None:
        return path
    utm = {"utm_source": channel, "utm_medium": "referral", "utm_campaign": campaign}
    return f"{path}/{channel}?{urlencode(utm)}"


def render_template(template: str, values: dict[str, str]) -> str:
    """Fills {link}, {code}, {name}, {program}; never str.format (no attribute access)."""
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    if "{link}" not in template and values.get("link"):
        text = f"{text} {values['link']}"
    return text


def share_intent(channel: str, message: str, link: str, subject: str) -> str | None:
    """The URL that opens the channel's composer with the message filled in."""
    q = quote
    match channel:
        case "email":
            return f"mailto:?subject={q(subject)}&body={q(message)}"
        case "sms":
            return f"sms:?&body={q(message)}"
        case "whatsapp":
            return f"https://wa.me/?text={q(message)}"
        case "facebook":
            return f"https://www.facebook.com/sharer/sharer.php?u={q(link, safe='')}"
        case "x":
            return f"https://x.com/intent/post?text={q(message)}"
        case "linkedin":
            return f"https://www.linkedin.com/sharing/share-offsite/?url={q(link, safe='')}"
    return None  # "copy": the message itself is the payload


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
    parts = urlsplit(candidate)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return landing_url
    if not host_allowed(parts.hostname, allowed_domains):
        return landing_url
    return candidate


def landing_url_for_click(
    target: str, code: str, click_id: str | None, extra: list[tuple[str, str]] | None = None
) -> str:
    """The target with `ref` and `click_id` added, its own query kept; `extra` (utm_* from the
    share link) only adds keys the target does not set itself."""
    parts = urlsplit(target)
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
    parts = urlsplit(target)
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
    if not ip:
        return None
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()


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

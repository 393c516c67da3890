"""Pure rules of advocates and their codes: vanity codes, share messages."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

from link_service.domain import code_key
from servicekit.problems import InvalidInput

DEFAULT_SHARE_TEMPLATE = "Join me at {program} and we both get a reward: {link}"
_PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")


@dataclass(frozen=True)
class Profile:
    """What an advocate may change about themselves."""

    email: str | None
    name: str | None
    locale: str | None
    marketing_consent: bool


@dataclass(frozen=True)
class NewAdvocate:
    advocate_id: str
    customer_id: str
    profile: Profile
    # The advocate who referred them, when a conversion enrolled them (the viral loop).
    referred_by: str | None = None
    # Checked against the program's attributes (servicekit.audience.attributes).
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCode:
    code: str
    advocate_id: str

    @property
    def key(self) -> str:
        return code_key(self.code)


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
            field="/code",
        )
    if code_key(code).replace("-", "") in RESERVED_WORDS:
        raise InvalidInput(f"'{code}' is a reserved word", field="/code")
    if is_offensive(code):
        raise InvalidInput(f"'{code}' is not allowed (offensive word list)", field="/code")
    return code


# ---------------------------------------------------------------------------- share messages


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

"""Pure rules of programs and their link settings: code format, status changes, window,
landing and allowed domains, share templates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from link_service.domain import (
    LOOK_ALIKES,
    SHARE_CHANNELS,
    TEMPLATE_PLACEHOLDERS,
    CodeFormat,
    host_allowed,
)
from servicekit.problems import Conflict, InvalidInput

PREFIX_PATTERN = re.compile(r"^[A-Z2-9]{1,10}-?$")
# Random codes must leave enough room that a collision retry is rare even for big programs.
MIN_CODE_SPACE = 10**9
_BRACED = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class ProgramSettings:
    """A whole program as validated (what a create or an update stores)."""

    name: str
    status: str
    landing_url: str
    allowed_domains: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    fallback_url: str | None
    default_locale: str
    code_format: CodeFormat
    vanity_allowed: bool
    share_templates: dict[str, str]


def stored_code_format(program: Mapping[str, Any]) -> CodeFormat:
    """The code format of a stored program (its code_* columns)."""
    return CodeFormat(
        length=program["code_length"],
        alphabet=program["code_alphabet"],
        prefix=program["code_prefix"],
    )


def check_takes_new_advocates(status: str) -> None:
    """An ended program enrolls nobody new (its advocates stay)."""
    if status == "ended":
        raise Conflict("the program has ended; it takes no new advocates", field="/program_id")


# ---------------------------------------------------------------------------- code format


def validate_code_format(length: int, alphabet: str, prefix: str) -> CodeFormat:
    """A program's random-code format, or InvalidInput naming the offending field."""
    if alphabet != alphabet.upper() or not alphabet.isalnum() or not alphabet.isascii():
        raise InvalidInput(
            "alphabet must be upper-case letters and digits (codes compare case-insensitively)",
            field="/code_format/alphabet",
        )
    if len(set(alphabet)) != len(alphabet):
        raise InvalidInput("alphabet repeats a character", field="/code_format/alphabet")
    bad = sorted(set(alphabet) & LOOK_ALIKES)
    if bad:
        raise InvalidInput(
            f"alphabet contains look-alike characters {''.join(bad)} (0/O, 1/I/L)",
            field="/code_format/alphabet",
        )
    if len(alphabet) < 10:
        raise InvalidInput("alphabet needs at least 10 characters", field="/code_format/alphabet")
    if not 4 <= length <= 24:
        raise InvalidInput("length must be between 4 and 24", field="/code_format/length")
    if len(alphabet) ** length < MIN_CODE_SPACE:
        raise InvalidInput(
            f"{len(alphabet)}^{length} codes are too few to draw from; raise the length",
            field="/code_format/length",
        )
    prefix = prefix.upper()
    if prefix and not PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidInput(
            "prefix is 1-10 letters/digits without look-alikes, optionally ending in '-'",
            field="/code_format/prefix",
        )
    if set(prefix.rstrip("-")) & LOOK_ALIKES:
        raise InvalidInput("prefix contains look-alike characters", field="/code_format/prefix")
    if len(prefix) + length > 40:
        raise InvalidInput("prefix and length exceed 40 characters", field="/code_format/prefix")
    return CodeFormat(length=length, alphabet=alphabet, prefix=prefix)


# ------------------------------------------------------------------- status, window, domains


ALLOWED_STATUS_CHANGES = {
    "draft": {"draft", "active", "paused", "ended"},
    "active": {"active", "paused", "ended"},
    "paused": {"paused", "active", "ended"},
    "ended": {"ended"},
}


def check_status_change(old: str, new: str) -> None:
    if new not in ALLOWED_STATUS_CHANGES[old]:
        raise InvalidInput(f"a program cannot go from {old} to {new}", field="/status")


def check_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidInput("ends_at must be after starts_at", field="/ends_at")


def _absolute_http_url(url: str, field: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field[1:]} must be an absolute http(s) URL", field=field)
    return url


def normalize_domains(
    landing_url: str, allowed_domains: list[str] | None, fallback_url: str | None = None
) -> list[str]:
    """The landing URL's host is always allowed; every domain is lower-case without a dot.
    The fallback URL must be on an allowed domain too: a program never sends people elsewhere."""
    _absolute_http_url(landing_url, "/landing_url")
    host = urlsplit(landing_url).hostname
    assert host is not None
    domains = {host.lower()}
    for d in allowed_domains or []:
        d = d.strip().lower().rstrip(".")
        if not d or not re.fullmatch(r"[a-z0-9.-]+", d) or d.startswith("."):
            raise InvalidInput(f"'{d}' is not a domain name", field="/allowed_domains")
        domains.add(d)
    if fallback_url is not None:
        _absolute_http_url(fallback_url, "/fallback_url")
        fb_host = urlsplit(fallback_url).hostname or ""
        if not host_allowed(fb_host, sorted(domains)):
            raise InvalidInput("fallback_url must be on an allowed domain", field="/fallback_url")
    return sorted(domains)


def validate_share_templates(templates: dict[str, str]) -> dict[str, str]:
    for channel, template in templates.items():
        if channel not in SHARE_CHANNELS:
            raise InvalidInput(
                f"unknown share channel '{channel}' (one of {', '.join(SHARE_CHANNELS)})",
                field=f"/share_templates/{channel}",
            )
        if not template.strip() or len(template) > 1000:
            raise InvalidInput(
                "a template is 1-1000 characters", field=f"/share_templates/{channel}"
            )
        unknown = set(_BRACED.findall(template)) - TEMPLATE_PLACEHOLDERS
        if unknown:
            raise InvalidInput(
                f"unknown placeholder {{{sorted(unknown)[0]}}}; use "
                + ", ".join("{" + p + "}" for p in sorted(TEMPLATE_PLACEHOLDERS)),
                field=f"/share_templates/{channel}",
            )
    return templates

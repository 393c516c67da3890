"""Pure rules of links and codes: no I/O, so they are unit-tested without infrastructure."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from servicekit.problems import InvalidInput

# No look-alikes (0/O, 1/I/L): codes are read aloud and typed at checkouts.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")


def generate_code(length: int, alphabet: str = CODE_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def code_key(code: str) -> str:
    """Codes compare case-insensitively."""
    return code.strip().upper()


def is_well_formed_code(code: str) -> bool:
    return bool(CODE_PATTERN.fullmatch(code.strip()))


def host_allowed(host: str, allowed_domains: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in allowed_domains)


def normalize_domains(landing_url: str, allowed_domains: list[str] | None) -> list[str]:
    """The landing URL's host is always allowed; every domain is lower-case without a dot."""
    parts = urlsplit(landing_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("landing_url must be an absolute http(s) URL", field="landing_url")
    domains = {parts.hostname.lower()}
    for d in allowed_domains or []:
        d = d.strip().lower().rstrip(".")
        if not d or "/" in d or ":" in d:
            raise InvalidInput(f"'{d}' is not a domain name", field="allowed_domains")
        domains.add(d)
    if not host_allowed(parts.hostname, sorted(domains)):
        raise InvalidInput("landing_url must be on an allowed domain", field="landing_url")
    return sorted(domains)


def landing_url_for_click(landing_url: str, code: str, click_id: str) -> str:
    """The landing URL with `ref` and `click_id` added, its own query kept."""
    parts = urlsplit(landing_url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("ref", "click_id")
    ]
    query += [("ref", code), ("click_id", click_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def can_earn(program_status: str, advocate_blocked: bool) -> bool:
    return program_status == "active" and not advocate_blocked


def ip_hash(key: str, ip: str | None) -> str | None:
    if not ip:
        return None
    return hmac.new(key.encode(), ip.encode(), hashlib.sha256).hexdigest()


def referrer_host(referrer: str | None) -> str | None:
    if not referrer:
        return None
    host = urlsplit(referrer).hostname
    return host.lower() if host else None

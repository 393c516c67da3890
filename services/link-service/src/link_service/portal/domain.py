"""Pure rules of the advocate's side: the advocate token (signed and checked with PyJWT), what a
browser origin may read, how a friend is shown, a referral's status. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

import jwt

from servicekit.problems import InvalidInput, Unauthorized

ALGORITHM = "HS256"
ISSUER = "link-service"
AUDIENCE = "advocate"
SCOPE = "me:read"
MAX_TTL = timedelta(hours=24)
MIN_KEY_LENGTH = 32

AutoEnroll = Literal["off", "signup", "purchase"]
ReferralStatus = Literal["clicked", "signed_up", "purchased", "rewarded", "refunded"]


@dataclass(frozen=True)
class AdvocateClaims:
    """Who a token speaks for: one advocate of one program of one tenant, read-only."""

    tenant_id: str
    program_id: str
    advocate_id: str
    expires_at: datetime


def key_id(secret: str) -> str:
    """A key's public name in the token header, derived from it: no ids to configure."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def token_ttl(requested_seconds: int | None, default_seconds: int) -> timedelta:
    ttl = timedelta(seconds=requested_seconds or default_seconds)
    if requested_seconds is not None and not 60 <= requested_seconds <= MAX_TTL.total_seconds():
        raise InvalidInput("ttl_seconds must be between 60 and 86400", field="/ttl_seconds")
    return ttl


def mint(claims: AdvocateClaims, keys: Sequence[str], now: datetime) -> str:
    """Signed with the first key; `kid` names it so verification needs no trial and error."""
    secret = keys[0]
    return jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": claims.advocate_id,
            "tid": claims.tenant_id,
            "pid": claims.program_id,
            "scope": SCOPE,
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
        },
        secret,
        algorithm=ALGORITHM,
        headers={"kid": key_id(secret)},
    )


def verify(token: str | None, keys: Sequence[str], now: datetime) -> AdvocateClaims:
    """The claims of a token one of `keys` signed and that has not expired; 401 otherwise. Only
    HS256 is accepted (never `none`, never an algorithm the token names for itself)."""
    if not token:
        raise Unauthorized("missing advocate token: send 'Authorization: Bearer <token>'")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid advocate token") from exc
    by_id = {key_id(k): k for k in keys}
    secret = by_id.get(str(header.get("kid")))
    if secret is None:
        raise Unauthorized("invalid advocate token: unknown or retired signing key")
    try:
        body = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            # Expiry is checked below against the caller's clock (the service's, or a test's).
            options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid advocate token") from exc
    try:
        exp = datetime.fromtimestamp(body["exp"], tz=now.tzinfo)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise Unauthorized("invalid advocate token") from exc
    _unexpired(exp, now)
    if body.get("scope") != SCOPE or not all(
        isinstance(body.get(c), str) and body.get(c) for c in ("sub", "tid", "pid")
    ):
        raise Unauthorized("invalid advocate token")
    return AdvocateClaims(body["tid"], body["pid"], body["sub"], exp)


def _unexpired(expires_at: datetime, now: datetime) -> None:
    if expires_at <= now:
        raise Unauthorized("the advocate token has expired")


class VerifiedTokens:
    """The tokens one replica has verified, with their claims: a page read again and again is
    checked by a dict lookup and its expiry, not a header parse, an HMAC and a JSON decode.

    Sound because nothing `verify` checks can change for the same bytes while the process runs,
    except the clock, which is checked on every use: the keys are settings, so dropping a
    key (the revocation) reaches the replicas as they restart with it, which empties this.
    Only verified tokens are kept (a refusal is checked again each time), at most `size`."""

    def __init__(self, keys: Sequence[str], size: int = 10_000) -> None:
        self._keys = tuple(keys)
        self._size = size
        self._claims: dict[str, AdvocateClaims] = {}

    def verify(self, token: str | None, now: datetime) -> AdvocateClaims:
        claims = self._claims.get(token) if token else None
        if claims is not None:
            _unexpired(claims.expires_at, now)
            return claims
        claims = verify(token, self._keys, now)
        if len(self._claims) >= self._size:
            self._claims.clear()
        self._claims[token] = claims  # type: ignore[index]  # verify refused a missing token
        return claims


def normalise_origin(value: str, field: str) -> str:
    """`scheme://host[:port]`, lower-cased, as a browser sends it in `Origin`."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidInput(f"'{value}' is not an origin (scheme://host[:port])", field=field)
    if parts.query or parts.fragment or parts.username:
        raise InvalidInput(f"'{value}' is not an origin (scheme://host[:port])", field=field)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    return origin is not None and origin in allowed


def mask_friend(email: str | None, customer_id: str) -> str:
    """What an advocate sees of a friend: 'b•••@e•••.com', never the address or a name."""
    if email and "@" in email:
        local, _, domain = email.partition("@")
        host, dot, tld = domain.rpartition(".")
        shown_host = f"{host[:1]}•••{dot}{tld}" if host else f"{tld[:1]}•••"
        return f"{local[:1]}•••@{shown_host}"
    return f"Friend {customer_id[-2:].upper()}•••" if len(customer_id) > 4 else "Friend •••"


def referral_status(
    *, signed_up: bool, purchased: bool, rewarded: bool, refunded: bool
) -> ReferralStatus:
    """The furthest a referral got; a refund outranks everything it undid."""
    if refunded:
        return "refunded"
    if rewarded:
        return "rewarded"
    if purchased:
        return "purchased"
    if signed_up:
        return "signed_up"
    return "clicked"


def enrolls_friend(setting: AutoEnroll, conversion_type: str) -> bool:
    """Whether a friend's attributed conversion makes them an advocate under the setting: on
    their first purchase, or already on signup (a purchase then finds them enrolled)."""
    if setting == "signup":
        return conversion_type in ("signup", "purchase")
    if setting == "purchase":
        return conversion_type == "purchase"
    return False


@dataclass(frozen=True)
class ReminderStep:
    send: bool
    done: bool


def reminder_step(
    *, sent: int, max_reminders: int, shared: bool, consent: bool, blocked: bool
) -> ReminderStep:
    """What a due reminder does: nothing more once the advocate has shared (a click on their
    link), withdrew consent, was blocked, or had them all (the program may have lowered its
    maximum since); otherwise one more, the last when it reaches the maximum."""
    if shared or not consent or blocked or sent >= max_reminders:
        return ReminderStep(send=False, done=True)
    return ReminderStep(send=True, done=sent + 1 >= max_reminders)

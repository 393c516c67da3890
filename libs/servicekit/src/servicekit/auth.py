"""API-key authentication and scopes. Keys are configured (and compared) as SHA-256 digests only;
each key belongs to one tenant, which scopes every query the request makes.

One path from a request's headers to its principal (`ApiKeyAuthenticator.from_headers`), taken
by the FastAPI dependencies here and by the front doors (servicekit.front) alike. A route
declares the scope it needs with `requires`; a front door standing in for the route finds that
dependency in the route table and applies the same check (`Principal.require`).

Two kinds of key: the bootstrap keys of the `API_KEYS` setting (platform admins of a fresh
install), and workspace keys (`rk_live_…` / `rk_test_…`) created through link-service, of which
every service reads its own copy (servicekit.keys.KeyStore, cached per replica for at most a
second). An unknown, malformed, expired or revoked key gets one and the same 401. A workspace
key's requests are rate limited by its workspace's plan (servicekit.ratelimit)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from servicekit.asgi import header_map
from servicekit.db import act_for, act_for_all_tenants, all_tenants
from servicekit.problems import Forbidden, InvalidInput, Unauthorized
from servicekit.ratelimit import RateLimiter
from servicekit.settings import ApiKeyEntry

KEY_PREFIX = "rk_"
# Workspace keys: the prefix tells secret scanners (and people) what leaked, and which mode.
LIVE_PREFIX = "rk_live_"
TEST_PREFIX = "rk_test_"
WORKSPACE_KEY_PREFIXES = (LIVE_PREFIX, TEST_PREFIX)

# Every scope a key may carry, and what it lets a key do (docs/api-scopes.md lists the routes).
SCOPES: dict[str, str] = {
    "programs:read": "read programs, codes, links and QR codes",
    "programs:write": "create and change programs, codes and reward rules",
    "advocates:read": "read advocates, referrals and conversions",
    "advocates:write": "enroll, change and block advocates; bulk enrollment",
    "conversions:write": "report conversions and refunds; review them",
    "rewards:read": "read rewards, balances and the ledger",
    "rewards:write": "redeem, reverse and adjust rewards; coupon pools",
    "payouts:write": "create and settle payouts",
    "webhooks:admin": "manage webhook endpoints and email templates",
    "privacy:admin": "erase and export personal data; suppressions",
    "admin": "manage the workspace's API keys and read its audit log",
}
# Bootstrap keys only: every scope.
ALL_SCOPES = "*"
# The one answer to a key that does not authenticate, whichever the reason.
INVALID_KEY = "invalid API key"
# Where a request's ASGI scope carries the RateLimit-* headers of its answer.
RATE_HEADERS = "servicekit.ratelimit"


def validate_scopes(scopes: list[str], field: str = "/scopes") -> list[str]:
    """`scopes` without repeats, in order; 422 naming the first unknown one (`/scopes/N`)."""
    for i, scope in enumerate(scopes):
        if scope not in SCOPES:
            raise InvalidInput(f"unknown scope '{scope}'", field=f"{field}/{i}")
    return list(dict.fromkeys(scopes))


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    scopes: frozenset[str]
    # The key's id (workspace keys) or `bootstrap:<name>`: who did it, in the audit log.
    key_id: str = ""
    # A bootstrap key of the API_KEYS setting: may manage workspaces.
    platform: bool = False
    # The workspace's plan: which rate limit the key's requests get.
    plan: str = "standard"
    # The RateLimit-* headers of this request's bucket (servicekit.ratelimit), which every
    # answer to it carries (`note_rate`); empty when the key is not limited.
    rate: list[tuple[bytes, bytes]] = field(default_factory=list, compare=False, hash=False)

    def note_rate(self, scope: MutableMapping[str, Any]) -> None:
        """Marks the request (its ASGI scope) for the RateLimit-* headers on its answer, which
        servicekit.app adds whoever answers (a route, an exception handler, a front door)."""
        if self.rate:
            scope[RATE_HEADERS] = self.rate

    def require(self, scope: str) -> None:
        if "*" not in self.scopes and scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class StoredKey:
    """A workspace key as a service's copy of the key table holds it."""

    key_id: str
    workspace_id: str
    scopes: frozenset[str]
    plan: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class KeyLookup(Protocol):
    """Where workspace keys are found by the SHA-256 of their secret (servicekit.keys)."""

    async def get(self, key_hash: str) -> StoredKey | None: ...


def presented_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if token and scheme.lower() == "bearer":
        return token
    key = headers.get(b"x-api-key")
    return key.decode("latin-1") if key is not None else None


class ApiKeyAuthenticator:
    """Bootstrap keys from the settings, then workspace keys from `store` (None: bootstrap
    keys only)."""

    def __init__(
        self,
        entries: list[ApiKeyEntry],
        store: KeyLookup | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._by_hash = {
            e.key_sha256: (
                e.key_sha256,
                Principal(
                    tenant_id=e.tenant_id,
                    scopes=frozenset(e.scopes),
                    key_id=f"bootstrap:{e.name or e.key_sha256[:8]}",
                    platform=True,
                ),
            )
            for e in entries
        }
        self.store = store
        self.limiter = limiter
        # Called with the id and workspace of every workspace key that authenticates
        # (servicekit.keys.KeyUsage.note: when the key was last used).
        self.on_use: Callable[[str, str], None] | None = None

    async def authenticate(self, presented: str | None) -> Principal:
        """The key's principal; from here on the request's connections see its tenant's rows
        only (row-level security, servicekit.db)."""
        who = await self._authenticate(presented)
        act_for(who.tenant_id)
        return who

    async def _authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(presented)
        bootstrap = self._by_hash.get(digest)
        # compare_digest keeps the final check constant-time even though the dict lookup isn't.
        if bootstrap is not None and hmac.compare_digest(bootstrap[0], digest):
            return bootstrap[1]
        if self.store is not None and presented.startswith(WORKSPACE_KEY_PREFIXES):
            with all_tenants():  # the key names the tenant: looked up across them
                key = await self.store.get(digest)
            if key is not None and key.usable(datetime.now(UTC)):
                # The key's rate limit, here so every path that authenticates applies it: the
                # routes' dependencies and the front doors alike.
                rate = self.limiter.check(key.key_id, key.plan) if self.limiter else None
                if self.on_use is not None:
                    self.on_use(key.key_id, key.workspace_id)
                return Principal(
                    tenant_id=key.workspace_id,
                    scopes=key.scopes,
                    key_id=key.key_id,
                    plan=key.plan,
                    rate=rate or [],
                )
        raise Unauthorized(INVALID_KEY)

    async def from_headers(self, headers: Mapping[bytes, bytes]) -> Principal:
        """The principal of a request with these headers (servicekit.asgi.header_map)."""
        return await self.authenticate(presented_key(headers))


# Both dependencies are coroutines: FastAPI runs plain functions in its thread pool, two thread
# hand-offs per request for what is a dict lookup and a SHA-256.
async def principal(request: Request) -> Principal:
    """FastAPI dependency: the tenant the request acts for."""
    authenticator: ApiKeyAuthenticator = request.app.state.authenticator
    who = await authenticator.from_headers(header_map(request.scope))
    who.note_rate(request.scope)
    return who


@dataclass(frozen=True)
class Requires:
    """FastAPI dependency: the principal, refused (403) unless its key carries `scope`. Front
    doors find it among a route's dependencies by its type and read `scope` from it."""

    scope: str

    async def __call__(self, who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(self.scope)
        return who


@dataclass(frozen=True)
class Public:
    """FastAPI dependency marking a route that takes no API key on purpose (the redirect, the
    probes, receivers authenticated by their own signature), with the reason: every route
    declares either this or `requires` (the route walk in tests/e2e checks)."""

    reason: str

    async def __call__(self) -> None:
        # No key names a tenant: the route finds it from what it is given (a code, a token, a
        # signed delivery), so its connections may see every tenant's rows.
        act_for_all_tenants()


def public(reason: str) -> Any:
    """`dependencies=[public("...why...")]` on a route that takes no API key."""
    return Depends(Public(reason))


def requires(scope: str) -> Any:
    """A route's scope, as a dependency: `dependencies=[requires("conversions:write")]` on the
    route, or `who: Annotated[Principal, requires("conversions:write")]` for a handler that
    also wants the principal (the key is authenticated once per request either way)."""
    return Depends(Requires(scope))

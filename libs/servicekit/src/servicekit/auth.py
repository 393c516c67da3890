"""API-key authentication and scopes. Keys are configured (and compared) as SHA-256 digests only;
each key belongs to one tenant, which scopes every query the request makes.

One path from a request's headers to its principal (`ApiKeyAuthenticator.from_headers`), taken
by the FastAPI dependencies here and by the front doors (servicekit.front) alike. A route
declares the scope it needs with `requires`; a front door standing in for the route finds that
dependency in the route table and applies the same check (`Principal.require`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from servicekit.asgi import header_map
from servicekit.problems import Forbidden, Unauthorized
from servicekit.settings import ApiKeyEntry

KEY_PREFIX = "rk_"


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if "*" not in self.scopes and scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def presented_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key`."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if token and scheme.lower() == "bearer":
        return token
    key = headers.get(b"x-api-key")
    return key.decode("latin-1") if key is not None else None


class ApiKeyAuthenticator:
    def __init__(self, entries: list[ApiKeyEntry]) -> None:
        self._by_hash = {e.key_sha256: e for e in entries}

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hash_key(presented)
        entry = self._by_hash.get(digest)
        # compare_digest keeps the final check constant-time even though the dict lookup isn't.
        if entry is None or not hmac.compare_digest(entry.key_sha256, digest):
            raise Unauthorized("invalid API key")
        return Principal(tenant_id=entry.tenant_id, scopes=frozenset(entry.scopes))

    def from_headers(self, headers: Mapping[bytes, bytes]) -> Principal:
        """The principal of a request with these headers (servicekit.asgi.header_map)."""
        return self.authenticate(presented_key(headers))


# Both dependencies are coroutines: FastAPI runs plain functions in its thread pool, two thread
# hand-offs per request for what is a dict lookup and a SHA-256.
async def principal(request: Request) -> Principal:
    """FastAPI dependency: the tenant the request acts for."""
    authenticator: ApiKeyAuthenticator = request.app.state.authenticator
    return authenticator.from_headers(header_map(request.scope))


@dataclass(frozen=True)
class Requires:
    """FastAPI dependency: the principal, refused (403) unless its key carries `scope`. Front
    doors find it among a route's dependencies by its type and read `scope` from it."""

    scope: str

    async def __call__(self, who: Annotated[Principal, Depends(principal)]) -> Principal:
        who.require(self.scope)
        return who


def requires(scope: str) -> Any:
    """A route's scope, as a dependency: `dependencies=[requires("conversions:write")]` on the
    route, or `who: Annotated[Principal, requires("conversions:write")]` for a handler that
    also wants the principal (the key is authenticated once per request either way)."""
    return Depends(Requires(scope))

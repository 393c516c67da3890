"""API-key authentication. Keys are configured (and compared) as SHA-256 digests only; each key
belongs to one tenant, which scopes every query the request makes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request

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


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the tenant the request acts for."""
    authenticator: ApiKeyAuthenticator = request.app.state.authenticator
    return authenticator.authenticate(presented_key(request))

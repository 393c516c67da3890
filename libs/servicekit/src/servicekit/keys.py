"""A service's copy of the workspace API keys link-service owns: the consumer handlers that keep
it (`KEY_HANDLERS`, from link.events) and the authenticator's view of it (`KeyStore`).

The copy is read through a per-replica cache by key hash, with a TTL of at most a second and
negative entries too (0.2 s), so a hot path does no database round trip per request while a
revoked key is refused within the TTL after its event is applied (the consumer's lag plus the
TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from referral_events import topics
from referral_events.contracts import link as ev
from referral_events.emitter import Emitter
from referral_events.envelope import CloudEvent
from referral_events.inbox import Handler
from servicekit.auth import StoredKey
from servicekit.runtime import ConsumerSpec, Runtime

# Negative entries come from guessed keys too; a replica forgets everything past this many.
MAX_CACHED = 100_000
# An unknown key is remembered this long (at most the TTL): long enough that a client retrying
# a bad key in a loop does not reach Postgres on every request, short enough that a key just
# created works as soon as its event has reached this service.
NEGATIVE_TTL = 0.2


class KeyStore:
    """Keys by the SHA-256 of their secret, from the `api_keys` table of the service's schema
    (referral_events.sql.API_KEYS_COPY_V1; link-service's own table has the same columns)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}

    async def get(self, key_hash: str) -> StoredKey | None:
        now = self._clock()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._pool().fetchrow(
            "SELECT id, workspace_id, scopes, plan, expires_at, revoked_at"
            " FROM api_keys WHERE key_hash = $1",
            key_hash,
        )
        key = (
            StoredKey(
                key_id=row["id"],
                workspace_id=row["workspace_id"],
                scopes=frozenset(row["scopes"]),
                plan=row["plan"],
                expires_at=row["expires_at"],
                revoked_at=row["revoked_at"],
            )
            if row is not None
            else None
        )
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        ttl = self._ttl if key is not None else min(self._ttl, NEGATIVE_TTL)
        self._cache[key_hash] = (now + ttl, key)
        return key

    def forget(self, key_hash: str) -> None:
        """This replica's own change, seen at once (the owner's API)."""
        self._cache.pop(key_hash, None)


async def on_api_key(conn: asyncpg.Connection, _event: CloudEvent, payload: Any) -> None:
    """Any api_key.* event: the key's whole state, kept unless the copy already has a newer one."""
    p: ev.ApiKeyCreated = payload
    await conn.execute(
        """
        INSERT INTO api_keys (key_hash, id, workspace_id, scopes, plan, expires_at, revoked_at,
                              version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (key_hash) DO UPDATE
           SET scopes = EXCLUDED.scopes, plan = EXCLUDED.plan, expires_at = EXCLUDED.expires_at,
               revoked_at = EXCLUDED.revoked_at, version = EXCLUDED.version
         WHERE api_keys.version < EXCLUDED.version
        """,
        p.key_hash,
        p.key_id,
        p.workspace_id,
        list(p.scopes),
        p.plan,
        p.expires_at,
        p.revoked_at,
        p.version,
    )


# Consumed from link.events by every service but link-service (which reads its own table).
KEY_HANDLERS: dict[str, Handler] = {
    ev.ApiKeyCreated.TYPE: on_api_key,
    ev.ApiKeyUpdated.TYPE: on_api_key,
    ev.ApiKeyRevoked.TYPE: on_api_key,
}


def key_consumer(service: str) -> ConsumerSpec:
    """The consumer group keeping `service`'s copy of the keys: a group of its own, so a key's
    revocation never waits behind the service's other link.events (or clicks)."""
    return ConsumerSpec(group=f"{service}-keys", topics=[topics.LINK_EVENTS], handlers=KEY_HANDLERS)


# key id -> last use, by workspace
Uses = dict[str, dict[str, datetime]]
Recorder = Callable[[asyncpg.Connection, Uses], Awaitable[None]]


class KeyUsage:
    """When each workspace key was last used at this replica, kept cheap: the authenticator
    notes each use in memory (`note`, its `on_use`) and this worker records what it noted at
    most once per `interval` (KEY_USAGE_FLUSH_SECONDS), in one transaction for all keys. How
    it records is the service's: link-service, the owner, updates its table; every other
    service publishes one `api_keys.used.v1` per workspace (`usage_events`), which link-service
    consumes. No request writes to the database for it."""

    def __init__(self, rt: Runtime, record: Recorder, interval: float = 60.0) -> None:
        self._rt = rt
        self._record = record
        self._interval = interval
        self._used: Uses = {}
        self._stop = asyncio.Event()

    def note(self, key_id: str, workspace_id: str = "") -> None:
        self._used.setdefault(workspace_id, {})[key_id] = datetime.now(UTC)

    async def flush(self) -> None:
        used, self._used = self._used, {}
        if used:
            async with self._rt.transaction() as conn:
                await self._record(conn, used)

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.flush()

    async def stop(self) -> None:
        self._stop.set()


def usage_events(emitter: Emitter) -> Recorder:
    """A KeyUsage recorder publishing the uses through the service's emitter (its outbox), one
    event per workspace, keyed by the workspace."""

    async def record(conn: asyncpg.Connection, used: Uses) -> None:
        for workspace_id, uses in used.items():
            await emitter.emit(
                conn,
                ev.ApiKeysUsed(service=emitter.service, uses=uses),
                tenant_id=workspace_id,
                key=workspace_id,
            )

    return record

"""Erased people stay erased: the tombstones every consumer checks before it writes.

An erasure (link-service's `privacy` feature) records, in every service's own schema, a keyed
hash of each of the person's identifiers (`privacy_tombstones`, never the identifier itself).
Each inbox consumer drops an event that names a tombstoned identifier in one of
`SUBJECT_FIELDS` before its handler runs, so a replay (a consumer reset, a DLQ replay) cannot
write the person's data again.

Cheap by construction: the digests live in memory (`Tombstones`), read from the table
incrementally at most once per `max_age` seconds per consumer poll (never per event); while a
workspace has no tombstone at all the check is one set lookup on an empty set. After a consumer
commits an erasure it reloads at once; another replica of the same service sees it within
`max_age` (the window is documented in docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

# Event payload field -> the kinds of identifier it may hold. A holder is an advocate (its id) or
# a friend (their customer id).
SUBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customer",),
    "friend_customer_id": ("customer",),
    "email": ("email",),
    "friend_email": ("email",),
    "advocate_id": ("advocate",),
    "friend_advocate_id": ("advocate",),
    "holder_id": ("customer", "advocate"),
}

KINDS = ("customer", "email", "advocate")


def normalise(kind: str, value: str) -> str:
    """Emails compare case-insensitively; ids exactly."""
    return value.strip().lower() if kind == "email" else value


def digest(key: bytes, tenant_id: str, kind: str, value: str) -> str:
    """The tombstone of one identifier: HMAC-SHA256 under the platform's PRIVACY_HASH_KEY, scoped
    to the workspace (the same customer id in another workspace is another person)."""
    message = f"{tenant_id}\x1f{kind}\x1f{normalise(kind, value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def pseudonym(key: bytes, tenant_id: str, value: str) -> str:
    """What an erased id (a friend's customer id as a ledger holder, an advocate's customer id)
    becomes: stable, so every service and every row agree (the books still balance per holder),
    and not reversible without the key."""
    return "erased_" + digest(key, tenant_id, "pseudonym", value)[:24]


def digests_of(key: bytes, tenant_id: str, data: Mapping[str, Any]) -> list[str]:
    """The tombstones an event's payload would match: one per identifier field it carries."""
    out: list[str] = []
    for field, kinds in SUBJECT_FIELDS.items():
        value = data.get(field)
        if isinstance(value, str) and value:
            out.extend(digest(key, tenant_id, kind, value) for kind in kinds)
    return out


TOMBSTONES_SQL_V1 = """
CREATE TABLE privacy_tombstones (
    seq        bigserial PRIMARY KEY,
    digest     text NOT NULL UNIQUE,
    request_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

DROP_TOMBSTONES_SQL_V1 = "DROP TABLE IF EXISTS privacy_tombstones;"


async def record(conn: asyncpg.Connection, request_id: str, digests: Iterable[str]) -> None:
    """Tombstones in the caller's transaction (the erasure's)."""
    await conn.execute(
        """
        INSERT INTO privacy_tombstones (digest, request_id)
        SELECT d, $2 FROM unnest($1::text[]) AS d ON CONFLICT (digest) DO NOTHING
        """,
        list(digests),
        request_id,
    )


class Tombstones:
    """One service's tombstones in memory, shared by its consumers."""

    def __init__(self, key: bytes, *, max_age: float = 1.0) -> None:
        self.key = key
        self._max_age = max_age
        self._digests: set[str] = set()
        self._seq = 0
        self._loaded_at = float("-inf")
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._digests)

    def erased(self, tenant_id: str, data: Mapping[str, Any]) -> bool:
        if not self._digests:
            return False
        return any(d in self._digests for d in digests_of(self.key, tenant_id, data))

    async def refresh(
        self, pool: asyncpg.Pool | asyncpg.Connection, *, force: bool = False
    ) -> None:
        """Read the tombstones added since the last read (at most every `max_age` s)."""
        now = time.monotonic()
        if not force and now - self._loaded_at < self._max_age:
            return
        try:
            rows = await pool.fetch(
                "SELECT seq, digest FROM privacy_tombstones WHERE seq > $1 ORDER BY seq",
                self._seq,
            )
        except asyncpg.UndefinedTableError:
            self._loaded_at = now  # a schema without the table (tests of the libraries)
            return
        for row in rows:
            self._digests.add(row["digest"])
            self._seq = row["seq"]
        self._loaded_at = now

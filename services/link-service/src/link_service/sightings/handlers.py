"""Advocate sightings: where link-service saw an advocate (their hashed network and device),
recorded at most once a day per network and device, each announced by advocate.sighted.v1 for
attribution's self-referral check. Takes the caller's connection (the edge's transaction)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import asyncpg

from link_service.domain import ip_hash
from link_service.events import EVENTS
from link_service.sightings import repository
from referral_events.contracts import link as ev
from servicekit.ids import new_id

Source = Literal["enrollment", "portal"]


def hashed(key: bytes, value: str | None) -> str | None:
    """The keyed hash of an IP address or a device id (attribution's keyed hash: they compare)."""
    return ip_hash(key, value)


async def record(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    advocate_id: str,
    program_id: str,
    source: Source,
    ip_hash: str | None,
    device_hash: str | None,
    now: datetime,
) -> bool:
    """Record a sighting and announce it, unless this advocate was seen on this network and
    device today already. Returns whether it was new."""
    if not ip_hash and not device_hash:
        return False
    sighting_id = new_id("sgt")
    new = await repository.insert_sighting(
        conn,
        sighting_id=sighting_id,
        tenant_id=tenant_id,
        advocate_id=advocate_id,
        source=source,
        ip_hash=ip_hash,
        device_hash=device_hash,
        seen_at=now,
    )
    if new:
        await EVENTS.emit(
            conn,
            ev.AdvocateSighted(
                sighting_id=sighting_id,
                advocate_id=advocate_id,
                program_id=program_id,
                seen_at=now,
                source=source,
                ip_hash=ip_hash,
                device_hash=device_hash,
            ),
            tenant_id=tenant_id,
            key=advocate_id,
        )
    return new


class SeenRecently:
    """Which (advocate, network, device) this replica recorded lately: a refer-a-friend page
    opened again and again costs no write (the table's unique day is the rule; this only
    spares the round trip)."""

    def __init__(self, ttl_seconds: float = 3600.0, size: int = 100_000) -> None:
        self._ttl = ttl_seconds
        self._size = size
        self._seen: dict[tuple[str, str | None, str | None], float] = {}

    def fresh(self, key: tuple[str, str | None, str | None]) -> bool:
        """Whether `key` was not seen within the TTL (and marks it seen)."""
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self._ttl:
            return False
        if len(self._seen) >= self._size:
            self._seen.clear()
        self._seen[key] = now
        return True

"""The per-replica cache of what the redirect needs to know about a code. link-service's own
events invalidate it (workers.CacheInvalidator), and the API on its own writes."""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from link_service import domain


@dataclass(frozen=True)
class CodeTarget:
    code: str
    tenant_id: str
    program_id: str
    advocate_id: str
    program_status: str
    starts_at: datetime | None
    ends_at: datetime | None
    landing_url: str
    fallback_url: str | None
    allowed_domains: tuple[str, ...]
    advocate_blocked: bool
    # landing / fallback URL split once (domain.click_url_parts) for the common case
    landing_parts: tuple[str, str] = ("", "")
    fallback_parts: tuple[str, str] = ("", "")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CodeTarget:
        fallback = row["fallback_url"] or row["landing_url"]
        return cls(
            code=row["code"],
            tenant_id=row["tenant_id"],
            program_id=row["program_id"],
            advocate_id=row["advocate_id"],
            program_status=row["program_status"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            landing_url=row["landing_url"],
            fallback_url=row["fallback_url"],
            allowed_domains=tuple(row["allowed_domains"]),
            advocate_blocked=row["advocate_blocked"],
            landing_parts=domain.click_url_parts(row["landing_url"]),
            fallback_parts=domain.click_url_parts(fallback),
        )


class CodeCache:
    """Bounded LRU with a TTL, indexed by program and advocate so an event about either drops
    every code it affects. Not thread-safe; it lives on the event loop.

    A lookup that raced with an invalidation must not store what it read before it: `put`
    takes the generation seen when the lookup started and stores nothing if any invalidation
    happened since.

    Events drop an entry the moment what it holds changes, so the TTL is only a safety net
    for a missed event. An expired entry is therefore kept for one more TTL and may answer
    (`stale`) while a single refresh runs; TTLs are jittered so entries loaded together (a
    warm-up, a popular campaign) do not all expire in the same instant."""

    def __init__(self, maxsize: int, ttl: float, negative_ttl: float) -> None:
        self._max = maxsize
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[str, tuple[float, CodeTarget | None]] = OrderedDict()
        self._by_program: dict[str, set[str]] = {}
        self._by_advocate: dict[str, set[str]] = {}
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bool, CodeTarget | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            if entry is not None and self._past_grace(entry):
                self._drop(key)
            self.misses += 1
            return False, None
        self._entries.move_to_end(key)
        self.hits += 1
        return True, entry[1]

    def stale(self, key: str) -> CodeTarget | None:
        """An expired (but not invalidated) target still within its grace TTL, else None."""
        entry = self._entries.get(key)
        if entry is None or self._past_grace(entry):
            return None
        return entry[1]

    def _past_grace(self, entry: tuple[float, CodeTarget | None]) -> bool:
        """Whether `stale` may no longer answer with it (unknown codes have no grace)."""
        return entry[1] is None or entry[0] + self._ttl < time.monotonic()

    def put(self, key: str, target: CodeTarget | None, generation: int) -> None:
        if generation != self.generation or self._max == 0:
            return
        if target is None and self._negative_ttl == 0:
            return
        self._drop(key)
        ttl = self._ttl * random.uniform(0.8, 1.0) if target is not None else self._negative_ttl
        self._entries[key] = (time.monotonic() + ttl, target)
        if target is not None:
            self._by_program.setdefault(target.program_id, set()).add(key)
            self._by_advocate.setdefault(target.advocate_id, set()).add(key)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None or entry[1] is None:
            return
        target = entry[1]
        for index, owner in (
            (self._by_program, target.program_id),
            (self._by_advocate, target.advocate_id),
        ):
            keys = index.get(owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[owner]

    def invalidate_program(self, program_id: str) -> None:
        self.generation += 1
        for key in list(self._by_program.get(program_id, ())):
            self._drop(key)

    def invalidate_advocate(self, advocate_id: str) -> None:
        self.generation += 1
        for key in list(self._by_advocate.get(advocate_id, ())):
            self._drop(key)

    def invalidate_codes(self, codes: list[str]) -> None:
        self.generation += 1
        for code in codes:
            self._drop(domain.code_key(code))

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_program.clear()
        self._by_advocate.clear()

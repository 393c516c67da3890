"""What the redirect, the workers and the API of one app instance share."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from link_service.config import Settings
from link_service.enrollment.worker import EnrollmentWorker
from link_service.redirect import repository as redirect_repository
from link_service.redirect.cache import CodeCache, CodeTarget
from link_service.redirect.workers import CacheInvalidator, ClickWriter
from servicekit.ratelimit import RateLimiter
from servicekit.runtime import Runtime
from servicekit.settings import PlanRate

log = logging.getLogger(__name__)


# The plan name of unknown-code probes on the redirect (servicekit.ratelimit).
PROBE_PLAN = "redirect"


class LinkState:
    """What the redirect shares with the workers and the API of one app instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = CodeCache(
            settings.code_cache_size,
            settings.code_cache_ttl_seconds,
            settings.code_cache_negative_ttl_seconds,
        )
        self.ip_key = settings.ip_hash_key.encode()
        self.client_ip_header = (
            settings.client_ip_header.lower().encode() if settings.client_ip_header else None
        )
        self.trusted_proxy_hops = settings.trusted_proxy_hops
        # Unknown-code answers per client address (known codes never count).
        self.probes = RateLimiter(
            {
                PROBE_PLAN: PlanRate(
                    per_second=settings.redirect_unknown_code_per_second,
                    burst=settings.redirect_unknown_code_burst,
                )
            }
        )
        self.rt: Runtime | None = None
        self.writer: ClickWriter | None = None
        self.invalidator: CacheInvalidator | None = None
        self.enrollment: EnrollmentWorker | None = None
        self.registry: Any = None  # the app's Prometheus registry (servicekit.metrics)
        # One database lookup per code at a time: concurrent misses for a code share it.
        self._loading: dict[str, asyncio.Task[CodeTarget | None]] = {}

    async def lookup(self, key: str) -> CodeTarget | None:
        hit, target = self.cache.get(key)
        if hit:
            return target
        stale = self.cache.stale(key)
        if stale is not None:
            # Past its TTL but no event changed it: answer now and refresh once behind it, so
            # an expiry never puts Postgres (and the pool the click writers share) in front of
            # a redirect.
            self._load(key)
            return stale
        return await asyncio.shield(self._load(key))

    def _load(self, key: str) -> asyncio.Task[CodeTarget | None]:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return task

    def _loaded(self, key: str, task: asyncio.Task[CodeTarget | None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None:
            # Whoever awaited it got the error; a background refresh leaves the stale entry
            # answering and the next request retries.
            log.warning("code lookup failed", exc_info=task.exception())

    async def _fetch(self, key: str) -> CodeTarget | None:
        assert self.rt is not None
        generation = self.cache.generation
        async with self.rt.pool.acquire() as conn:
            row = await redirect_repository.resolve_code(conn, key)
        target = CodeTarget.from_row(row) if row is not None else None
        self.cache.put(key, target, generation)
        return target

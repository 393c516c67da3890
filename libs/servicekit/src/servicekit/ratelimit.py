"""Rate limits: token buckets (the `token-bucket` library) per key, one bucket size and refill
rate per plan. Held per replica, in memory: a cluster-wide limit is set at the ingress (README,
deploy/k8s/base/ingress.yaml). `RateLimiter.check` is the one function every path calls: the
authenticator for API keys (so routes and front doors alike), the redirect for unknown-code
probes by client IP."""

from __future__ import annotations

import math
from collections.abc import Mapping

from token_bucket import Limiter, MemoryStorage

from servicekit.problems import DomainError
from servicekit.settings import PlanRate


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"
    type = "rate-limited"


class RateLimiter:
    """Buckets by key, for each plan; a plan not listed is not limited. Forgets every bucket
    past `max_keys` distinct keys (keys from client addresses are unbounded), which at worst
    hands the clients a fresh burst."""

    def __init__(self, plans: Mapping[str, PlanRate], max_keys: int = 100_000) -> None:
        self._plans = dict(plans)
        self._max_keys = max_keys
        self._limiters: dict[str, Limiter] = {}
        self._keys: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self._limiters = {
            plan: Limiter(rate.per_second, rate.burst, MemoryStorage())
            for plan, rate in self._plans.items()
        }
        self._keys = set()

    def check(self, key: str, plan: str) -> None:
        """Takes a token from `key`'s bucket; 429 with Retry-After and RateLimit-* headers when
        there is none (and nothing is taken)."""
        limiter = self._limiters.get(plan)
        if limiter is None:
            return
        if key not in self._keys:
            if len(self._keys) >= self._max_keys:
                self._reset()
                limiter = self._limiters[plan]
            self._keys.add(key)
        if limiter.consume(key):
            return
        rate = self._plans[plan]
        # consume() refilled the bucket before refusing: what is left is less than one token.
        left = limiter._storage.get_token_count(key)
        wait = max(1, math.ceil((1 - left) / rate.per_second))
        exc = TooManyRequests(
            f"rate limit of this {'key' if plan != 'redirect' else 'client'} exceeded; "
            f"retry after {wait}s",
        )
        exc.headers = {
            "Retry-After": str(wait),
            "RateLimit-Limit": str(rate.burst),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(wait),
            "RateLimit-Policy": f"{rate.burst};w={max(1, round(rate.burst / rate.per_second))}",
        }
        raise exc

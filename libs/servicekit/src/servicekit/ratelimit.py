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

    def check(self, key: str, plan: str) -> RateHeaders | None:
        """Takes a token from `key`'s bucket and returns the RateLimit-* headers every answer
        to the request carries (None: the plan is not limited); 429 with Retry-After and the
        same headers when there is no token (and nothing is taken)."""
        limiter = self._limiters.get(plan)
        if limiter is None:
            return None
        if key not in self._keys:
            if len(self._keys) >= self._max_keys:
                self._reset()
                limiter = self._limiters[plan]
            self._keys.add(key)
        rate = self._plans[plan]
        if limiter.consume(key):
            # consume() refilled the bucket, then took one token: what is left now.
            left = limiter._storage.get_token_count(key)
            full = math.ceil((rate.burst - left) / rate.per_second)
            return _headers(rate, math.floor(left), full)
        # consume() refilled the bucket before refusing: what is left is less than one token.
        left = limiter._storage.get_token_count(key)
        wait = max(1, math.ceil((1 - left) / rate.per_second))
        exc = TooManyRequests(
            f"rate limit of this {'key' if plan != 'redirect' else 'client'} exceeded; "
            f"retry after {wait}s",
        )
        exc.headers = {
            "Retry-After": str(wait),
            **{_NAMES[k]: v.decode() for k, v in _headers(rate, 0, wait)},
        }
        raise exc


# Response headers as ASGI sends them (name, value), lower-case names.
RateHeaders = list[tuple[bytes, bytes]]
_NAMES = {
    b"ratelimit-limit": "RateLimit-Limit",
    b"ratelimit-remaining": "RateLimit-Remaining",
    b"ratelimit-reset": "RateLimit-Reset",
    b"ratelimit-policy": "RateLimit-Policy",
}


def _headers(rate: PlanRate, remaining: int, reset: int) -> RateHeaders:
    """The IETF draft's RateLimit-* fields (draft-ietf-httpapi-ratelimit-headers): the bucket
    size, the whole requests left in it, the seconds until it is full again (429: until the
    next token), and the policy (`burst;w=seconds a full bucket takes to refill`)."""
    return [
        (b"ratelimit-limit", str(rate.burst).encode()),
        (b"ratelimit-remaining", str(max(0, remaining)).encode()),
        (b"ratelimit-reset", str(max(0, reset)).encode()),
        (
            b"ratelimit-policy",
            f"{rate.burst};w={max(1, round(rate.burst / rate.per_second))}".encode(),
        ),
    ]

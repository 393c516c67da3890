"""The RateLimit-* headers a bucket gives every answer (servicekit.ratelimit): the bucket
size, the whole requests left, the seconds until it is full again; the 429's the same, with
Retry-After. No infrastructure."""

from __future__ import annotations

import pytest

from servicekit.ratelimit import RateLimiter, TooManyRequests
from servicekit.settings import PlanRate


def _fields(headers: list[tuple[bytes, bytes]] | None) -> dict[str, str]:
    assert headers is not None
    return {k.decode(): v.decode() for k, v in headers}


def test_every_token_taken_says_what_is_left() -> None:
    limiter = RateLimiter({"free": PlanRate(per_second=0.5, burst=3)})
    seen = [_fields(limiter.check("key_a", "free")) for _ in range(3)]
    assert [s["ratelimit-remaining"] for s in seen] == ["2", "1", "0"]
    assert {s["ratelimit-limit"] for s in seen} == {"3"}
    assert {s["ratelimit-policy"] for s in seen} == {"3;w=6"}
    # 1, 2, then 3 tokens short of a full bucket at half a token a second
    assert [int(s["ratelimit-reset"]) for s in seen] == [2, 4, 6]
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("key_a", "free")
    assert refused.value.headers is not None
    assert refused.value.headers["RateLimit-Remaining"] == "0"
    assert refused.value.headers["Retry-After"] == refused.value.headers["RateLimit-Reset"] == "2"
    # another key has its own bucket; a plan not listed is not limited
    assert _fields(limiter.check("key_b", "free"))["ratelimit-remaining"] == "2"
    assert limiter.check("key_a", "unlimited") is None

"""Coupon pools: merchant-uploaded codes handed out one per coupon reward (earning allocates
them). No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CouponPool:
    id: str
    program_id: str
    name: str
    low_threshold: int
    total: int
    remaining: int
    created_at: datetime
    # codes the request that returned this pool added (None: it added none)
    added: int | None = None


@dataclass(frozen=True)
class Stock:
    """A pool's free codes after an allocation, against its low threshold."""

    remaining: int
    threshold: int

    @property
    def low(self) -> bool:
        return self.remaining <= self.threshold


EMPTY = Stock(0, 0)

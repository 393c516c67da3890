"""Events produced by reward-service on `reward.events` (keyed by advocate id).

`amount` is an integer in the minor units of `unit`: cents for a currency, whole units for points
or quantities (e.g. MB). Never a float.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from referral_events.envelope import EventPayload

Role = Literal["advocate", "friend"]


class _RewardState(EventPayload):
    reward_id: str
    program_id: str
    advocate_id: str
    holder_id: str
    role: Role
    conversion_id: str
    kind: str
    amount: int
    unit: str
    rule_version: int | None = None
    trigger: str | None = None


class RewardPending(_RewardState):
    TYPE: ClassVar[str] = "reward.pending.v1"

    available_at: datetime


class RewardAvailable(_RewardState):
    TYPE: ClassVar[str] = "reward.available.v1"


# --- added for issue #6 (additive: new optional fields above are defaulted, new models below) ---


class RewardVoided(_RewardState):
    """A pending reward (or part of it) will never become available, e.g. refunded in the hold.

    `amount` is what this event voids; `remaining_amount` is what the reward still holds after it
    (non-zero when a partial refund scales a percent reward down)."""

    TYPE: ClassVar[str] = "reward.voided.v1"

    reason: str
    remaining_amount: int = 0
    refund_id: str | None = None
    voided_at: datetime | None = None


class RewardClawedBack(_RewardState):
    """Part or all of an already available reward is taken back after a refund.

    `method` is the program's policy: `negative_entry` takes it from the available balance (which
    may go below zero); `debt` takes what is available and records the rest as a debt netted
    against future rewards (`debt_amount`)."""

    TYPE: ClassVar[str] = "reward.clawed_back.v1"

    method: Literal["negative_entry", "debt"]
    reason: str
    debt_amount: int = 0
    refund_id: str | None = None
    clawed_back_at: datetime | None = None


class RewardCapped(_RewardState):
    """A reward was earned but a cap or the program budget withheld some or all of it.

    `amount` is what was withheld; `granted_amount` is what was still given (0 when fully capped).
    `reason` names the cap, e.g. `advocate_amount_cap`, `advocate_count_cap`, `program_budget`,
    `unit_cap`; `period` is month / year / lifetime for per-advocate caps."""

    TYPE: ClassVar[str] = "reward.capped.v1"

    reason: str
    requested_amount: int
    granted_amount: int = 0
    period: Literal["month", "year", "lifetime"] | None = None


class RewardRedeemed(EventPayload):
    """A holder spent part of their available balance (POST /v1/accounts/{holder}/redemptions)."""

    TYPE: ClassVar[str] = "reward.redeemed.v1"

    redemption_id: str
    holder_id: str
    role: Role
    amount: int
    unit: str
    kind: str = "credit"
    program_id: str | None = None
    advocate_id: str | None = None
    reference: str | None = None
    redeemed_at: datetime | None = None


class MilestoneReached(EventPayload):
    """The advocate's count of successful referrals reached a milestone with a one-off bonus."""

    TYPE: ClassVar[str] = "milestone.reached.v1"

    program_id: str
    advocate_id: str
    holder_id: str
    role: Role = "advocate"
    referral_count: int
    milestone: int
    reward_id: str | None = None
    conversion_id: str | None = None
    kind: str = "credit"
    amount: int
    unit: str


class CouponAllocated(EventPayload):
    """A code from the program's merchant-uploaded pool was handed out (each code exactly once)."""

    TYPE: ClassVar[str] = "coupon.allocated.v1"

    coupon_code: str
    pool_id: str
    reward_id: str
    program_id: str
    advocate_id: str
    holder_id: str
    role: Role = "friend"
    conversion_id: str
    kind: str = "coupon"
    amount: int = 1
    unit: str = "coupon"


class CouponPoolLow(EventPayload):
    """A coupon pool's unallocated codes fell to or below its threshold (0 = exhausted)."""

    TYPE: ClassVar[str] = "coupon_pool.low.v1"

    pool_id: str
    program_id: str
    remaining: int
    threshold: int


class _PayoutLine(EventPayload):
    """One holder's line in a payout batch; events are per line so each holder can be told."""

    payout_id: str
    batch_id: str
    program_id: str | None = None
    advocate_id: str
    holder_id: str
    role: Role = "advocate"
    kind: str = "cash"
    amount: int
    unit: str


class PayoutCreated(_PayoutLine):
    TYPE: ClassVar[str] = "payout.created.v1"


class PayoutPaid(_PayoutLine):
    TYPE: ClassVar[str] = "payout.paid.v1"

    reference: str | None = None
    paid_at: datetime | None = None


class PayoutFailed(_PayoutLine):
    """The line's amount went back to the holder's available balance."""

    TYPE: ClassVar[str] = "payout.failed.v1"

    reason: str
    failed_at: datetime | None = None

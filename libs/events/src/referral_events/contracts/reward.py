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


class RewardPending(_RewardState):
    TYPE: ClassVar[str] = "reward.pending.v1"

    available_at: datetime


class RewardAvailable(_RewardState):
    TYPE: ClassVar[str] = "reward.available.v1"

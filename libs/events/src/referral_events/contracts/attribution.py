"""Events produced by attribution-service on `attribution.events` (keyed by advocate id)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from referral_events.envelope import EventPayload

Evidence = Literal["code", "click", "existing_referral"]


class ReferralAttributed(EventPayload):
    """A friend became attached to an advocate (first attributed conversion, usually signup)."""

    TYPE: ClassVar[str] = "referral.attributed.v1"

    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_id: str
    evidence: Evidence
    click_id: str | None = None
    attributed_at: datetime


class ConversionAttributed(EventPayload):
    TYPE: ClassVar[str] = "conversion.attributed.v1"

    conversion_id: str
    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    order_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    is_first_purchase: bool = False
    occurred_at: datetime
    evidence: Evidence


class ConversionRejected(EventPayload):
    TYPE: ClassVar[str] = "conversion.rejected.v1"

    conversion_id: str
    program_id: str | None = None
    advocate_id: str | None = None
    conversion_type: str
    reasons: list[str]
    occurred_at: datetime

"""HTTP bodies of the advocate's side: tokens, the program's portal settings, GET /v1/me."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from link_service.domain import Channel
from link_service.portal.domain import MAX_TTL, AutoEnroll, ReferralStatus


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int | None = Field(default=None, ge=60, le=int(MAX_TTL.total_seconds()))


class TokenOut(BaseModel):
    token: str
    token_type: str = "Bearer"  # noqa: S105 (the scheme, not a secret)
    advocate_id: str
    program_id: str
    expires_at: datetime


class PortalSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Origins (scheme://host[:port]) whose pages may call GET /v1/me with a token.
    allowed_origins: list[str] = Field(default_factory=list, max_length=50)
    # Enroll referred friends as advocates when they convert (the viral loop).
    auto_enroll: AutoEnroll = "off"
    # How long the storefront snippet keeps a visit's ref and click id (the attribution window).
    cookie_days: int = Field(default=30, ge=1, le=365)
    # Share reminders (as advocate.share_reminder_due events) to advocates with marketing
    # consent who have not shared yet: at most this many (0: none) ...
    reminder_max: int = Field(default=0, ge=0, le=10)
    # ... one every this many days after enrolling.
    reminder_interval_days: int = Field(default=7, ge=1, le=90)


class PortalSettingsOut(PortalSettingsIn):
    program_id: str
    updated_at: datetime


class StorefrontConfig(BaseModel):
    """What the public storefront snippet needs: nothing secret."""

    program_id: str
    cookie_days: int


class ShareOut(BaseModel):
    channel: Channel
    url: str
    message: str
    intent_url: str | None


class StatsOut(BaseModel):
    clicks: int
    friends_joined: int
    friends_purchased: int


class RewardTotalOut(BaseModel):
    """Per unit (a currency, points, ...), integer minor units."""

    unit: str
    pending: int
    available: int
    redeemed: int


class ReferralOut(BaseModel):
    friend: str
    status: ReferralStatus
    since: datetime


class ProgressOut(BaseModel):
    successful_referrals: int
    last_milestone: int | None
    next_milestone: int | None


class MeOut(BaseModel):
    advocate_id: str
    program_id: str
    program_name: str
    locale: str
    code: str
    link: str
    qr_url: str
    share: list[ShareOut]
    stats: StatsOut
    rewards: list[RewardTotalOut]
    referrals: list[ReferralOut]
    progress: ProgressOut

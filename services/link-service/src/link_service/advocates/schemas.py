"""HTTP bodies of advocates, their codes and share links."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, IPvAnyAddress

from link_service.domain import Channel

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class AdvocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    marketing_consent: bool = False
    attributes: dict[str, Any] | None = Field(
        default=None,
        description="plan, country (ISO 3166-1 alpha-2), language, tags and the program's"
        " custom attributes",
    )


class EnrollIn(AdvocateIn):
    """Enrolling through the API may say where the advocate is: their IP address and device id
    are hashed on arrival (a sighting for attribution's self-referral check, never stored in
    clear)."""

    ip: IPvAnyAddress | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=200)


class AdvocatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    marketing_consent: bool | None = None
    attributes: dict[str, Any] | None = Field(
        default=None, description="attributes to change now (null removes one)"
    )


class AttributeChangeIn(BaseModel):
    """The merchant's event: attributes that changed at `effective_at` (a plan change dated when
    it happened; not in the future)."""

    model_config = ConfigDict(extra="forbid")

    changes: dict[str, Any] = Field(min_length=1)
    effective_at: AwareDatetime | None = None


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class VanityCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=40)


class AdvocateOut(BaseModel):
    id: str
    program_id: str
    customer_id: str
    email: str | None
    name: str | None
    locale: str | None
    marketing_consent: bool
    blocked: bool
    block_reason: str | None
    attributes: dict[str, Any] = Field(default_factory=dict)
    code: str
    aliases: list[str] = Field(description="earlier codes; they keep redirecting")
    link: str
    version: int
    created_at: datetime


class CodeOut(BaseModel):
    code: str = Field(description="the advocate's current code")
    matched: str = Field(description="the code as stored that the lookup matched")
    alias: bool = Field(description="the looked-up code is an earlier code of the advocate")
    program_id: str
    advocate_id: str
    can_earn: bool
    reason: str | None = Field(description="why it cannot earn, if it cannot")


class ShareLinkOut(BaseModel):
    channel: Channel
    url: str = Field(description="the tracked link for this channel, UTM-tagged")
    message: str = Field(description="the program's message for this channel, link included")
    intent_url: str | None = Field(description="opens the network's composer pre-filled")


class ShareLinksOut(BaseModel):
    advocate_id: str
    code: str
    link: str
    channels: list[ShareLinkOut]

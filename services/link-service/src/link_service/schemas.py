"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from link_service.domain import CODE_ALPHABET

ProgramStatus = Literal["draft", "active", "paused", "ended"]
Channel = Literal["email", "sms", "whatsapp", "facebook", "x", "linkedin", "copy"]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class CodeFormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None: the service's CODE_LENGTH setting.
    length: int | None = Field(default=None, ge=4, le=24)
    alphabet: str = Field(default=CODE_ALPHABET, min_length=10, max_length=36)
    prefix: str = Field(default="", max_length=11)


class ProgramIn(BaseModel):
    """A whole program (POST and PUT)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    landing_url: str = Field(min_length=1, max_length=2000)
    allowed_domains: list[str] = Field(default_factory=list, max_length=50)
    status: ProgramStatus = "active"
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    fallback_url: str | None = Field(default=None, min_length=1, max_length=2000)
    default_locale: str = Field(default="en", min_length=2, max_length=35)
    code_format: CodeFormatIn = Field(default_factory=CodeFormatIn)
    vanity_allowed: bool = False
    share_templates: dict[str, str] = Field(default_factory=dict)


class ProgramPatch(BaseModel):
    """A partial change (PATCH): only the fields sent change; null clears an optional one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    landing_url: str | None = Field(default=None, min_length=1, max_length=2000)
    allowed_domains: list[str] | None = Field(default=None, max_length=50)
    status: ProgramStatus | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    fallback_url: str | None = Field(default=None, min_length=1, max_length=2000)
    default_locale: str | None = Field(default=None, min_length=2, max_length=35)
    code_format: CodeFormatIn | None = None
    vanity_allowed: bool | None = None
    share_templates: dict[str, str] | None = None


class CodeFormatOut(BaseModel):
    length: int
    alphabet: str
    prefix: str


class ProgramOut(BaseModel):
    id: str
    name: str
    status: ProgramStatus
    live: bool = Field(description="active and inside its window: its clicks can earn")
    landing_url: str
    fallback_url: str | None
    allowed_domains: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    default_locale: str
    code_format: CodeFormatOut
    vanity_allowed: bool
    share_templates: dict[str, str]
    version: int
    created_at: datetime
    updated_at: datetime


class ProgramList(BaseModel):
    items: list[ProgramOut]


class AdvocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    marketing_consent: bool = False


class AdvocatePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    marketing_consent: bool | None = None


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


class EnrollmentError(BaseModel):
    row: int = Field(description="1-based data row (the CSV header is not a row)")
    line: int = Field(description="line of the file")
    field: str | None
    message: str


class EnrollmentJobOut(BaseModel):
    id: str
    program_id: str
    format: Literal["csv", "ndjson"]
    status: Literal["queued", "running", "done"]
    total_rows: int
    done_rows: int
    enrolled: int
    existing: int = Field(description="rows whose customer was already enrolled (no change)")
    failed: int
    errors: list[EnrollmentError] = Field(description="the first errors; all at /errors")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EnrollmentErrorsOut(BaseModel):
    items: list[EnrollmentError]
    next_after_row: int | None

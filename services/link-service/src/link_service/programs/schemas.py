"""HTTP bodies of programs."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from link_service.domain import CODE_ALPHABET
from referral_events.contracts.link import ProgramStatus


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

"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ProgramStatus = Literal["draft", "active", "paused", "ended"]


class ProgramIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    landing_url: str = Field(min_length=1, max_length=2000)
    allowed_domains: list[str] = Field(default_factory=list, max_length=50)
    status: ProgramStatus = "active"


class ProgramOut(BaseModel):
    id: str
    name: str
    status: ProgramStatus
    landing_url: str
    allowed_domains: list[str]
    created_at: datetime


class AdvocateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, max_length=35)
    marketing_consent: bool = False


class AdvocateOut(BaseModel):
    id: str
    program_id: str
    customer_id: str
    email: str | None
    name: str | None
    locale: str | None
    blocked: bool
    code: str
    link: str
    created_at: datetime


class CodeOut(BaseModel):
    code: str
    program_id: str
    advocate_id: str
    can_earn: bool

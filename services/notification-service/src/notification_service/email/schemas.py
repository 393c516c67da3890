"""HTTP request and response bodies of the email API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from notification_service.email.domain import Category, MailStatus


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advocate_id: str = Field(min_length=1, max_length=100)
    emails: list[str] = Field(min_length=1, max_length=100)
    # The advocate's own words, shown (escaped) in the invite.
    message: str | None = Field(default=None, max_length=500)
    # The friends' locale; default: the advocate's.
    locale: str | None = Field(default=None, max_length=35)
    # Invites are marketing mail: true records that the advocate confirmed the friends agreed
    # to hear from the program (see README, "Consent").
    consent: bool = False


class InviteOut(BaseModel):
    email: str
    # queued | duplicate (this advocate already invited the address) | suppressed | self
    status: str
    email_id: str | None = None


class InvitesOut(BaseModel):
    data: list[InviteOut]


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=500)
    html: str = Field(min_length=1, max_length=100_000)
    text: str = Field(min_length=1, max_length=100_000)


class TemplateOut(BaseModel):
    program_id: str
    template: str
    locale: str
    subject: str
    html: str
    text: str
    updated_at: datetime


class TemplateSpecOut(BaseModel):
    template: str
    category: Category
    recipient: str
    description: str
    builtin_locales: list[str]


class TemplateSpecList(BaseModel):
    data: list[TemplateSpecOut]


class PreviewIn(BaseModel):
    """Which wording to render: a draft (subject, html and text), or the one a mail for this
    program and locale would get."""

    model_config = ConfigDict(extra="forbid")

    program_id: str | None = Field(default=None, max_length=100)
    locale: str | None = Field(default=None, max_length=35)
    subject: str | None = Field(default=None, max_length=500)
    html: str | None = Field(default=None, max_length=100_000)
    text: str | None = Field(default=None, max_length=100_000)


class PreviewOut(BaseModel):
    template: str
    locale: str
    source: Literal["draft", "program", "builtin"]
    subject: str
    html: str
    text: str


class SuppressionIn(BaseModel):
    """Also the bounce hook: post hard bounces with reason "bounced"."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=254)
    reason: Literal["unsubscribed", "bounced", "complained", "manual"]
    detail: str | None = Field(default=None, max_length=500)


class SuppressionOut(BaseModel):
    email: str
    reason: str
    detail: str | None
    created_at: datetime


class EmailOut(BaseModel):
    id: str
    template: str
    recipient_kind: str
    recipient_id: str
    program_id: str | None
    locale: str | None
    status: MailStatus
    suppressed_reason: str | None
    # `no_address` when skipped: the recipient has no address (final; nothing was sent).
    skipped_reason: str | None = None
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime

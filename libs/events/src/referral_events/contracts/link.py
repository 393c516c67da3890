"""Events produced by link-service on `link.events` and `link.clicks`."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from referral_events.envelope import EventPayload

ProgramStatus = Literal["draft", "active", "paused", "ended"]


class ProgramCreated(EventPayload):
    TYPE: ClassVar[str] = "program.created.v1"

    program_id: str
    name: str
    status: ProgramStatus
    landing_url: str
    allowed_domains: list[str]


class ProgramUpdated(EventPayload):
    """Carries the program's whole new state, so a consumer's copy never needs the old one."""

    TYPE: ClassVar[str] = "program.updated.v1"

    program_id: str
    name: str
    status: ProgramStatus
    landing_url: str
    allowed_domains: list[str]


class AdvocateEnrolled(EventPayload):
    TYPE: ClassVar[str] = "advocate.enrolled.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"email", "name"})

    advocate_id: str
    program_id: str
    customer_id: str
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    marketing_consent: bool = False


class CodeCreated(EventPayload):
    TYPE: ClassVar[str] = "code.created.v1"

    code: str
    advocate_id: str
    program_id: str
    kind: Literal["random", "vanity"] = "random"


class LinkClicked(EventPayload):
    """One per redirect. `counts` is false for bots, HEAD requests' absence aside, and for clicks
    on programs or advocates that cannot earn; such clicks are kept for analytics only."""

    TYPE: ClassVar[str] = "link.clicked.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"ip_hash"})

    click_id: str
    code: str
    advocate_id: str
    program_id: str
    clicked_at: datetime
    channel: str | None = None
    user_agent_family: str | None = None
    device_class: str | None = None
    referrer_host: str | None = None
    ip_hash: str | None = None
    is_bot: bool = False
    counts: bool = True

"""Events produced by link-service on `link.events` and `link.clicks`.

Program and advocate events carry the entity's whole current state (not a diff), so a consumer's
copy never needs the previous event; a consumer that sees an older state after a newer one can
compare `version` (it only grows). Every field added after v1 shipped is optional or defaulted, so
payloads written before it still parse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from referral_events.envelope import EventPayload

ProgramStatus = Literal["draft", "active", "paused", "ended"]
CodeKind = Literal["random", "vanity"]


class CodeFormat(BaseModel):
    """How random codes of a program look: `prefix` + `length` characters from `alphabet`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    length: int = 8
    alphabet: str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    prefix: str = ""


class _ProgramState(EventPayload):
    program_id: str
    name: str
    status: ProgramStatus
    landing_url: str
    allowed_domains: list[str]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    # Where a paused or ended program's links go; None means its landing URL.
    fallback_url: str | None = None
    default_locale: str = "en"
    code_format: CodeFormat | None = None
    vanity_allowed: bool = False
    # Per share channel (email, sms, whatsapp, facebook, x, linkedin, copy): message template.
    share_templates: dict[str, str] = Field(default_factory=dict)
    # Grows with every change; lets a consumer ignore an older state that arrives late.
    version: int = 1


class ProgramCreated(_ProgramState):
    TYPE: ClassVar[str] = "program.created.v1"


class ProgramUpdated(_ProgramState):
    """Carries the program's whole new state, so a consumer's copy never needs the old one."""

    TYPE: ClassVar[str] = "program.updated.v1"


class _AdvocateState(EventPayload):
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"email", "name"})

    advocate_id: str
    program_id: str
    customer_id: str
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    marketing_consent: bool = False
    blocked: bool = False
    # The advocate's current code and its public share link (welcome emails use it).
    code: str | None = None
    link_url: str | None = None
    version: int = 1
    # The advocate whose referral enrolled this one (auto-enrollment of converted friends), so
    # analytics can count referral generations; None for advocates the merchant enrolled.
    referred_by: str | None = None


class AdvocateEnrolled(_AdvocateState):
    TYPE: ClassVar[str] = "advocate.enrolled.v1"


class AdvocateUpdated(_AdvocateState):
    """Whole new state after a profile change (email, name, locale, consent)."""

    TYPE: ClassVar[str] = "advocate.updated.v1"


class AdvocateBlocked(EventPayload):
    """A blocked advocate's links still redirect, but nothing of theirs can earn."""

    TYPE: ClassVar[str] = "advocate.blocked.v1"

    advocate_id: str
    program_id: str
    reason: str | None = None
    blocked_at: datetime | None = None
    version: int | None = None


class AdvocateUnblocked(EventPayload):
    TYPE: ClassVar[str] = "advocate.unblocked.v1"

    advocate_id: str
    program_id: str
    unblocked_at: datetime | None = None
    version: int | None = None


class AdvocateAttributesChanged(EventPayload):
    """A change of an advocate's attributes (plan, country, language, tags, custom ones) in
    force from `effective_at`: enrollment, a PATCH, or the merchant's own event (a plan change
    dated when it happened). `changes` holds only what changed (None removes an attribute).
    The attributes at a time t are every change with effective_at <= t applied in
    (effective_at, change) order (servicekit.audience.state_at), so a change that arrives late
    but dated earlier slots in where it belongs. `change` grows per advocate."""

    TYPE: ClassVar[str] = "advocate.attributes_changed.v1"
    # the merchant's facts about the person (plan, country, custom ones)
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"changes"})

    advocate_id: str
    program_id: str
    change: int
    changes: dict[str, Any]
    effective_at: datetime


class ProgramAudienceChanged(EventPayload):
    """A program's custom attribute definitions (name -> string/number/boolean/date), its
    segments (name and condition) and its eligibility (who may enroll, which friends' countries
    count), whole; documents as servicekit.audience reads them. `version` only grows."""

    TYPE: ClassVar[str] = "program.audience_changed.v1"

    program_id: str
    attributes: dict[str, str] = Field(default_factory=dict)
    segments: list[dict[str, Any]] = Field(default_factory=list)
    eligibility: dict[str, Any] = Field(default_factory=dict)
    version: int = 1


class AdvocateSighted(EventPayload):
    """Where an advocate was seen: enrolled through the API with their network or device, or
    opening their refer-a-friend page (GET /v1/me). Hashes only (the same keyed hash as clicks'
    IPs and conversions' devices), at most one per advocate, network and device a day.
    Attribution's self-referral check compares friends with every sighting in its window."""

    TYPE: ClassVar[str] = "advocate.sighted.v1"
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset({"ip_hash", "device_hash"})

    sighting_id: str
    advocate_id: str
    program_id: str
    seen_at: datetime
    source: Literal["enrollment", "portal"]
    ip_hash: str | None = None
    device_hash: str | None = None


class CodeCreated(EventPayload):
    TYPE: ClassVar[str] = "code.created.v1"

    code: str
    advocate_id: str
    program_id: str
    kind: CodeKind = "random"
    # The public share link for this code (e.g. https://go.example.com/r/JANE20).
    link_url: str | None = None


class CodeChanged(EventPayload):
    """An advocate's current code changed (a vanity code was set). `previous_code` stays an alias:
    it keeps redirecting and attributing to the same advocate."""

    TYPE: ClassVar[str] = "code.changed.v1"

    code: str
    previous_code: str
    advocate_id: str
    program_id: str
    kind: CodeKind = "vanity"
    link_url: str | None = None
    changed_at: datetime | None = None


class FriendConverted(EventPayload):
    """A referred friend converted and was enrolled as an advocate (the program's auto-enroll
    setting): they have a code and link of their own at once, for a post-purchase share
    prompt. `advocate_id` is the one who referred them (the key); the friend's own advocate is
    `friend_advocate_id`, whose advocate.enrolled carries `referred_by`."""

    TYPE: ClassVar[str] = "referral.friend_converted.v1"

    advocate_id: str
    program_id: str
    friend_advocate_id: str
    friend_customer_id: str
    friend_code: str
    friend_link_url: str
    conversion_id: str
    conversion_type: str
    converted_at: datetime | None = None


class ShareReminderDue(EventPayload):
    """An advocate who enrolled with marketing consent has not shared their link yet (no click
    on it): the program's n-th share reminder is due (`reminder` of `max_reminders`). Emitted
    by link-service's durable schedule; the email itself is the notifier's (suppressions
    respected there), or the merchant's through a webhook."""

    TYPE: ClassVar[str] = "advocate.share_reminder_due.v1"

    advocate_id: str
    program_id: str
    reminder: int
    max_reminders: int
    code: str
    link_url: str
    due_at: datetime


class LinkClicked(EventPayload):
    """One per redirect (GET; HEAD requests record nothing). `counts` is false for bots and for
    clicks on programs or advocates that cannot earn (paused/ended/outside the active window,
    blocked advocate); such clicks are kept for analytics only."""

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
    # Why a click does not count: "bot", "program_inactive", "advocate_blocked" (None if it counts).
    inactive_reason: str | None = None


# Workspaces and API keys (link-service's `workspaces` package), keyed by workspace id. Every
# service keeps a copy of the key table from these (servicekit.keys), so no request asks another
# service who a key belongs to. A key is named by the SHA-256 of its secret; the secret itself
# is never in an event.

WorkspacePlan = Literal["free", "standard", "enterprise"]


class WorkspaceCreated(EventPayload):
    TYPE: ClassVar[str] = "workspace.created.v1"

    workspace_id: str
    name: str
    plan: WorkspacePlan = "standard"
    created_at: datetime | None = None


class _ApiKeyState(EventPayload):
    key_id: str
    key_hash: str
    workspace_id: str
    name: str = ""
    scopes: list[str]
    # The workspace's plan when the key last changed: the rate limit its requests get.
    plan: WorkspacePlan = "standard"
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    # Grows with every change; a copy ignores an older state that arrives late.
    version: int = 1


class ApiKeyCreated(_ApiKeyState):
    TYPE: ClassVar[str] = "api_key.created.v1"


class ApiKeyUpdated(_ApiKeyState):
    """Whole new state after a change of name, scopes or expiry."""

    TYPE: ClassVar[str] = "api_key.updated.v1"


class ApiKeyRevoked(_ApiKeyState):
    TYPE: ClassVar[str] = "api_key.revoked.v1"


class ApiKeysUsed(EventPayload):
    """When a workspace's keys were last used at one service: published by every service but
    link-service, on its own topic, at most once per KEY_USAGE_FLUSH_SECONDS and workspace
    (servicekit.keys.KeyUsage); link-service, which owns the keys, keeps `last_used_at` from
    these and from its own requests."""

    TYPE: ClassVar[str] = "api_keys.used.v1"

    service: str
    # key id -> its last use at `service` in the period
    uses: dict[str, datetime]

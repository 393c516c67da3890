"""HTTP request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from notification_service.webhooks.domain import DeliveryStatus


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    # Exact type names ("reward.available.v1") or patterns ("reward.*", "*" for every type).
    # Left out: the reward lifecycle (domain.DEFAULT_EVENT_TYPES); empty is refused.
    event_types: list[str] | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=500)


class EndpointPatch(BaseModel):
    """Only the fields sent change. `enabled: true` re-enables a disabled endpoint."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[str] | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


class SecretRotated(BaseModel):
    """The new secret (shown only here). The previous one keeps signing next to it until
    `previous_expires_at`, so receivers can switch without dropping a message."""

    secret: str
    previous_expires_at: datetime


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime
    until: datetime | None = None


class ReplayOut(BaseModel):
    replayed: int


class EndpointOut(BaseModel):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    # "gone" (the receiver answered 410), "failing" (failed for days), "manual".
    disabled_reason: str | None
    disabled_at: datetime | None = None
    failing_since: datetime | None
    created_at: datetime


class EndpointCreated(EndpointOut):
    """The only answer that shows the secret: keep it where the receiver can read it."""

    secret: str


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None
    outcome: Literal["delivered", "retry", "failed"]


class DeliveryOut(BaseModel):
    id: str
    # The CloudEvent id, also sent as the webhook-id header.
    message_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    failed_at: datetime | None
    created_at: datetime
    attempts: list[AttemptOut]

"""Bodies of the personal data requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SubjectIn(BaseModel):
    """One person in the caller's workspace: their customer id, their e-mail address, or both
    (an advocate found by either brings the other along)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(
        default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    )


class RequestAccepted(BaseModel):
    id: str
    kind: Literal["export", "erasure"]
    status: Literal["pending", "completed"]
    requested_at: datetime


class ServiceProgress(BaseModel):
    status: Literal["pending", "receiving", "done"]
    parts_received: int
    parts: int | None = None
    done_at: datetime | None = None
    rows: dict[str, int] = Field(default_factory=dict)


class RequestOut(BaseModel):
    id: str
    kind: Literal["export", "erasure"]
    status: Literal["pending", "completed"]
    requested_at: datetime
    requested_by: str
    completed_at: datetime | None = None
    services: dict[str, ServiceProgress]
    # a completed export: every service's document, by service then table
    document: dict[str, Any] | None = None

"""The one envelope every event travels in: CloudEvents 1.0, structured JSON mode."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    """Base of every published payload.

    Payloads are frozen and only ever grow (additive changes): consumers ignore fields they do not
    know, so an old consumer keeps working when a producer adds one. A breaking change is a new
    type name with a new version suffix.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    TYPE: ClassVar[str]
    # Fields holding personal data, so privacy export/erasure can find them without reading code.
    PERSONAL_DATA: ClassVar[frozenset[str]] = frozenset()


class CloudEvent(BaseModel):
    """CloudEvents 1.0 attributes plus the `tenantid` extension every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    tenantid: str = Field(min_length=1)
    data: dict[str, Any]

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)


def new_event(
    payload: EventPayload,
    *,
    source: str,
    tenant_id: str,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Wrap a payload; `event_id` lets a caller derive ids from a cause so retries reuse them."""
    return CloudEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=payload.TYPE,
        time=time or datetime.now(UTC),
        subject=subject,
        tenantid=tenant_id,
        data=payload.model_dump(mode="json"),
    )

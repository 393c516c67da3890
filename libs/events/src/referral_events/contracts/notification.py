"""Events produced by notification-service on `notification.events` (keyed by endpoint id)."""

from __future__ import annotations

from typing import ClassVar

from referral_events.envelope import EventPayload


class DeliverySucceeded(EventPayload):
    TYPE: ClassVar[str] = "delivery.succeeded.v1"

    delivery_id: str
    endpoint_id: str
    message_id: str
    event_type: str
    attempt: int
    status_code: int


class DeliveryFailed(EventPayload):
    TYPE: ClassVar[str] = "delivery.failed.v1"

    delivery_id: str
    endpoint_id: str
    message_id: str
    event_type: str
    attempt: int
    status_code: int | None = None
    error: str
    will_retry: bool

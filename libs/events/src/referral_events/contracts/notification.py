"""Events produced by notification-service on `notification.events` (keyed by endpoint id)."""

from __future__ import annotations

from datetime import datetime
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


class EndpointDisabled(EventPayload):
    """An endpoint was switched off by the service: `reason` is "gone" (the receiver answered 410)
    or "failing" (every attempt failed for the configured period, 5 days by default)."""

    TYPE: ClassVar[str] = "endpoint.disabled.v1"

    endpoint_id: str
    reason: str
    url: str | None = None
    failing_since: datetime | None = None
    last_status_code: int | None = None
    disabled_at: datetime | None = None


class EmailSent(EventPayload):
    """A mail was accepted by the SMTP server. The recipient address is deliberately not carried:
    `recipient_id` is the advocate id or the friend's customer id/referral id."""

    TYPE: ClassVar[str] = "email.sent.v1"

    email_id: str
    template: str
    recipient_kind: str
    recipient_id: str
    program_id: str | None = None
    locale: str | None = None
    cause_event_id: str | None = None


class EmailSuppressed(EventPayload):
    """A mail was not sent: `reason` is "unsubscribed", "bounced", "no_consent" or "no_address"."""

    TYPE: ClassVar[str] = "email.suppressed.v1"

    email_id: str
    template: str
    recipient_kind: str
    recipient_id: str
    reason: str
    program_id: str | None = None
    cause_event_id: str | None = None


class ThankYou(EventPayload):
    """A thank-you is due: to the advocate when a friend they referred converts (the referral's
    first attributed conversion, before any reward is available), and to the friend on their
    first purchase. notification-service mails it (per locale, suppressions respected) and
    delivers this to the merchant's webhooks, so the merchant can thank in its own channels
    too. No address is carried."""

    TYPE: ClassVar[str] = "referral.thank_you.v1"

    recipient_kind: str  # "advocate" or "friend"
    recipient_id: str
    advocate_id: str
    program_id: str
    referral_id: str
    conversion_id: str
    conversion_type: str

"""The routing table from consumed event types to handlers: every type an endpoint can
subscribe to goes to the same fan-out."""

from __future__ import annotations

from notification_service import domain, handlers
from referral_events import topics
from servicekit.runtime import ConsumerSpec

CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        group="notification-service",
        topics=[topics.REWARD_EVENTS, topics.ATTRIBUTION_EVENTS],
        handlers={t: handlers.on_webhook_event for t in sorted(domain.DELIVERED_EVENT_TYPES)},
    )
]

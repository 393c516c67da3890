"""What attribution-service publishes: its emitter, the one way its events are enveloped, keyed,
traced and written to its outbox (referral_events.emitter)."""

from __future__ import annotations

from referral_events import topics
from referral_events.emitter import Emitter

SERVICE = "attribution-service"
EVENTS = Emitter(SERVICE, topics.ATTRIBUTION_EVENTS)

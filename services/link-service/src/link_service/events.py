"""What link-service publishes: its emitter, the one way its events are enveloped, keyed,
traced and written to its outbox (referral_events.emitter)."""

from __future__ import annotations

from referral_events import topics
from referral_events.emitter import Emitter

SERVICE = "link-service"
EVENTS = Emitter(SERVICE, topics.LINK_EVENTS)
# link.clicked, serialised on the redirect's hot path (redirect.click_event_json).
CLICKS = Emitter(SERVICE, topics.LINK_CLICKS)

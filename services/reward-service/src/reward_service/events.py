"""What reward-service publishes: its emitter, the one way its events are enveloped, keyed,
traced and written to its outbox (referral_events.emitter), and how their ids derive from their
cause. Each event type has one builder, in the feature package that emits it
(earning/events.py, payouts/events.py)."""

from __future__ import annotations

from referral_events import topics
from referral_events.emitter import Emitter
from reward_service import ids

SERVICE = "reward-service"
EVENTS = Emitter(SERVICE, topics.REWARD_EVENTS)

_NS_EVENT = ids.namespace("event")


def event_id(*parts: str) -> str:
    """The id of the event `parts` name: re-emitting it yields the same id, which the outbox's
    unique key absorbs."""
    return str(ids.derive(_NS_EVENT, *parts))


def reward_event_id(reward_id: str, event_type: str, qualifier: str = "") -> str:
    """One event per reward and state (and refund)."""
    return event_id(reward_id, event_type, *((qualifier,) if qualifier else ()))

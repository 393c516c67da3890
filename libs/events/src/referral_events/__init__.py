"""Event contracts and the Kafka/Postgres machinery every service shares.

Nothing here knows about a particular service: the envelope, the published payload models,
the transactional outbox, the idempotent inbox consumer and trace propagation.
"""

from referral_events.envelope import CloudEvent, EventPayload, new_event
from referral_events.registry import parse_payload, payload_type

__all__ = ["CloudEvent", "EventPayload", "new_event", "parse_payload", "payload_type"]

"""reward-service's routing table: which handler each consumed event type reaches. Types not
listed here are skipped by the inbox consumer (and not recorded)."""

from __future__ import annotations

from referral_events import topics
from referral_events.contracts.attribution import ConversionAttributed
from reward_service import handlers
from servicekit.runtime import ConsumerSpec

CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        group="reward-service",
        topics=[topics.ATTRIBUTION_EVENTS],
        handlers={ConversionAttributed.TYPE: handlers.on_conversion_attributed},
    ),
]

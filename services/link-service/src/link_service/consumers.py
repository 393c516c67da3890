"""link-service consumes nothing yet (advocate stats from reward.events come later)."""

from __future__ import annotations

from servicekit.runtime import ConsumerSpec

CONSUMERS: list[ConsumerSpec] = []

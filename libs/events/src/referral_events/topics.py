"""Topic names and their layout. Keys are chosen so the entity whose order matters stays on one
partition: the advocate for attribution and rewards, the code for clicks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    retention_ms: int


DAY_MS = 24 * 3600 * 1000

LINK_EVENTS = "link.events"
LINK_CLICKS = "link.clicks"
ATTRIBUTION_EVENTS = "attribution.events"
REWARD_EVENTS = "reward.events"
NOTIFICATION_EVENTS = "notification.events"

TOPICS: tuple[Topic, ...] = (
    Topic(LINK_EVENTS, 6, 30 * DAY_MS),
    Topic(LINK_CLICKS, 12, 14 * DAY_MS),
    Topic(ATTRIBUTION_EVENTS, 12, 30 * DAY_MS),
    Topic(REWARD_EVENTS, 12, 30 * DAY_MS),
    Topic(NOTIFICATION_EVENTS, 6, 7 * DAY_MS),
)


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS: tuple[Topic, ...] = TOPICS + tuple(Topic(dlq(t.name), 1, 90 * DAY_MS) for t in TOPICS)

"""The routing table from consumed event types to handlers. Every deliverable type fans out to
webhook endpoints; types that cause mail or carry contact facts also go to their email
handler, in the same inbox transaction (one event, one transaction, whatever it causes; with
group commit, a poll's events share it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from notification_service.email.consumed import EMAIL_HANDLERS
from notification_service.privacy.handlers import on_privacy_requested
from notification_service.webhooks import domain, handlers
from referral_events import CloudEvent, topics
from referral_events.contracts.privacy import PrivacyRequested
from referral_events.inbox import Handler
from servicekit.runtime import ConsumerSpec


def _all_of(parts: Sequence[Handler]) -> Handler:
    if len(parts) == 1:
        return parts[0]

    async def handle(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        for part in parts:
            await part(conn, event, payload)

    return handle


def routing_table() -> dict[str, Handler]:
    table: dict[str, list[Handler]] = {}
    for t in sorted(domain.DELIVERED_EVENT_TYPES):
        table.setdefault(t, []).append(handlers.on_webhook_event)
    for t, handler in EMAIL_HANDLERS.items():
        table.setdefault(t, []).append(handler)
    table.setdefault(PrivacyRequested.TYPE, []).append(on_privacy_requested)
    return {t: _all_of(parts) for t, parts in table.items()}


CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        group="notification-service",
        topics=[topics.LINK_EVENTS, topics.REWARD_EVENTS, topics.ATTRIBUTION_EVENTS],
        handlers=routing_table(),
        # fan-out inserts and contact facts (each contact row locked alone): a poll's events
        # share one transaction
        group_commit=True,
    )
]

"""The routing table from consumed event types to handlers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from attribution_service.analytics import handlers as analytics
from attribution_service.privacy.handlers import on_privacy_requested
from attribution_service.programs import handlers
from referral_events import CloudEvent, topics
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw
from referral_events.contracts.privacy import PrivacyRequested
from referral_events.inbox import Batched, BatchHandler, Handler
from servicekit.runtime import ConsumerSpec


def both(first: Handler, then: Handler) -> Handler:
    """One event handled by two features in the same transaction (one inbox row)."""

    async def handle(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        await first(conn, event, payload)
        await then(conn, event, payload)

    return handle


def both_runs(first: Batched, then: BatchHandler) -> Batched:
    """A run of events (inbox.Batched) handled by two features in the same transaction; wrapping
    a Batched handler with `both` would hand the consumer a plain one, and it would take the run
    one event per transaction."""

    async def handle(conn: asyncpg.Connection, run: Sequence[tuple[CloudEvent, Any]]) -> None:
        await first.handle(conn, run)
        await then(conn, run)

    return Batched(handle)


# Growth analytics folds link-service's facts in this group's transactions (one more group on
# the same topics would keep a second inbox row per click), the events this service emits where
# it emits them (analytics.handlers.fold_emitted), and reward-service's in its own group.

# one handler object for every reward type analytics folds: a fetched run is one transaction
REWARDS = Batched(analytics.on_rewards)

CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        group="attribution-service",
        topics=[topics.LINK_EVENTS, topics.LINK_CLICKS],
        handlers={
            ev.ProgramCreated.TYPE: both(handlers.on_program, analytics.on_program),
            ev.ProgramUpdated.TYPE: both(handlers.on_program, analytics.on_program),
            ev.AdvocateEnrolled.TYPE: both(handlers.on_advocate, analytics.on_advocate_enrolled),
            ev.AdvocateUpdated.TYPE: both(handlers.on_advocate, analytics.on_advocate_updated),
            ev.ProgramAudienceChanged.TYPE: handlers.on_audience_changed,
            ev.AdvocateBlocked.TYPE: handlers.on_advocate_blocked,
            ev.AdvocateUnblocked.TYPE: handlers.on_advocate_blocked,
            ev.AdvocateSighted.TYPE: handlers.on_advocate_sighted,
            ev.CodeCreated.TYPE: handlers.on_code_created,
            ev.CodeChanged.TYPE: handlers.on_code_changed,
            ev.LinkClicked.TYPE: both_runs(handlers.on_link_clicked, analytics.on_clicks),
            PrivacyRequested.TYPE: on_privacy_requested,
        },
    ),
    # Growth analytics' own group (its own inbox rows and offsets): reward-service's events.
    ConsumerSpec(
        group="attribution-service-analytics",
        topics=[topics.REWARD_EVENTS],
        handlers={
            t: REWARDS
            for t in (
                rw.RewardPending.TYPE,
                rw.RewardAvailable.TYPE,
                rw.RewardVoided.TYPE,
                rw.RewardClawedBack.TYPE,
            )
        },
    ),
]

"""The routing table from consumed event types to handlers."""

from __future__ import annotations

from attribution_service.analytics import handlers as analytics
from attribution_service.programs import handlers
from referral_events import topics
from referral_events.contracts import attribution as at
from referral_events.contracts import link as ev
from referral_events.contracts import reward as rw
from servicekit.runtime import ConsumerSpec

CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        group="attribution-service",
        topics=[topics.LINK_EVENTS, topics.LINK_CLICKS],
        handlers={
            ev.ProgramCreated.TYPE: handlers.on_program,
            ev.ProgramUpdated.TYPE: handlers.on_program,
            ev.AdvocateEnrolled.TYPE: handlers.on_advocate,
            ev.AdvocateUpdated.TYPE: handlers.on_advocate,
            ev.AdvocateBlocked.TYPE: handlers.on_advocate_blocked,
            ev.AdvocateUnblocked.TYPE: handlers.on_advocate_blocked,
            ev.CodeCreated.TYPE: handlers.on_code_created,
            ev.CodeChanged.TYPE: handlers.on_code_changed,
            ev.LinkClicked.TYPE: handlers.on_link_clicked,
        },
    ),
    # Growth analytics: its own group (its own inbox rows and offsets), so the read models
    # fold every event once whatever the other group does, and lag there never delays
    # attribution. It reads this service's own attribution.events like any other consumer.
    ConsumerSpec(
        group="attribution-analytics",
        topics=[
            topics.LINK_EVENTS,
            topics.LINK_CLICKS,
            topics.ATTRIBUTION_EVENTS,
            topics.REWARD_EVENTS,
        ],
        handlers={
            ev.ProgramCreated.TYPE: analytics.on_program,
            ev.ProgramUpdated.TYPE: analytics.on_program,
            ev.AdvocateEnrolled.TYPE: analytics.on_advocate_enrolled,
            ev.AdvocateUpdated.TYPE: analytics.on_advocate_updated,
            ev.LinkClicked.TYPE: analytics.on_link_clicked,
            at.ReferralAttributed.TYPE: analytics.on_referral_attributed,
            at.ConversionAttributed.TYPE: analytics.on_conversion_attributed,
            at.ConversionRefunded.TYPE: analytics.on_conversion_refunded,
            rw.RewardPending.TYPE: analytics.on_reward_issued,
            rw.RewardAvailable.TYPE: analytics.on_reward_issued,
            rw.RewardVoided.TYPE: analytics.on_reward_voided,
            rw.RewardClawedBack.TYPE: analytics.on_reward_clawed_back,
        },
    ),
]

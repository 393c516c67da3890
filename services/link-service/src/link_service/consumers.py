"""link-service's routing table: which handler each consumed event type reaches. Types not
listed are skipped by the inbox consumer (and not recorded).

The advocate portal's read model (GET /v1/me) folds attribution.events (referrals, conversions,
refunds) and reward.events (the advocate's rewards, redemptions, milestones), and enrolls
converted friends when their program says so. The same group folds the other services'
reports of when workspace keys were last used (`api_keys.used.v1`, on each one's own topic,
notification.events included) into the keys' last_used_at, and blocks an advocate attribution
blocked automatically (advocate.auto_blocked.v1). Every replica also tails link.events without a
group for its code cache (workers.CacheInvalidator), which is no consumer group."""

from __future__ import annotations

from typing import Any

import asyncpg

from link_service.advocates import handlers as advocates
from link_service.domain import Links
from link_service.portal import handlers as portal
from link_service.privacy import handlers as privacy
from link_service.workspaces import usage
from referral_events import CloudEvent, topics
from referral_events.contracts import attribution as att
from referral_events.contracts import link as lk
from referral_events.contracts import privacy as pv
from referral_events.contracts import reward as rw
from referral_events.inbox import Handler
from servicekit.runtime import ConsumerSpec

PORTAL_GROUP = "link-service-portal"


def consumers(links: Links) -> list[ConsumerSpec]:
    """The consumer groups, with the service's public links bound in (an auto-enrolled
    friend's link)."""

    async def referral(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, att.ReferralAttributed)
        await portal.on_referral_attributed(conn, event, payload)

    async def conversion(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, att.ConversionAttributed)
        await portal.on_conversion_attributed(conn, event, payload, links)

    async def refund(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, att.ConversionRefunded)
        await portal.on_conversion_refunded(conn, event, payload)

    async def reward(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(
            payload, rw.RewardPending | rw.RewardAvailable | rw.RewardVoided | rw.RewardClawedBack
        )
        await portal.on_reward_state(conn, event, payload)

    async def redeemed(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, rw.RewardRedeemed)
        await portal.on_reward_redeemed(conn, event, payload)

    async def milestone(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, rw.MilestoneReached)
        await portal.on_milestone_reached(conn, event, payload)

    async def auto_blocked(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, att.AdvocateAutoBlocked)
        await advocates.on_auto_blocked(conn, event, payload)

    async def part_done(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, pv.PrivacyPartDone)
        await privacy.on_part_done(conn, event, payload)

    routes: dict[str, Handler] = {
        # the keys' uses at the other services (workspaces.usage)
        lk.ApiKeysUsed.TYPE: usage.on_keys_used,
        att.AdvocateAutoBlocked.TYPE: auto_blocked,
        att.ReferralAttributed.TYPE: referral,
        att.ConversionAttributed.TYPE: conversion,
        att.ConversionRefunded.TYPE: refund,
        rw.RewardPending.TYPE: reward,
        rw.RewardAvailable.TYPE: reward,
        rw.RewardVoided.TYPE: reward,
        rw.RewardClawedBack.TYPE: reward,
        rw.RewardRedeemed.TYPE: redeemed,
        rw.MilestoneReached.TYPE: milestone,
        # the other services' parts of personal data requests (privacy feature)
        pv.PrivacyPartDone.TYPE: part_done,
    }
    return [
        ConsumerSpec(
            group=PORTAL_GROUP,
            topics=[topics.ATTRIBUTION_EVENTS, topics.REWARD_EVENTS, topics.NOTIFICATION_EVENTS],
            handlers=routes,
            # read-model folds and enrollments, each locking only its own rows: a poll's events
            # share one transaction
            group_commit=True,
        )
    ]


# The CLI's replay-dlq and docs read this; the app binds its own PUBLIC_BASE_URL (main.py).
CONSUMERS = consumers(Links("http://127.0.0.1:8001"))

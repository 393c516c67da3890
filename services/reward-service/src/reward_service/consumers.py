"""reward-service's routing table: which handler each consumed event type reaches. Types not
listed here are skipped by the inbox consumer (and not recorded).

referral.attributed is not consumed: a signup reaches the rules as conversion.attributed with
conversion_type "signup", and consuming both would reward the same signup twice. review.decided
needs nothing either: an approval is also published as conversion.attributed."""

from __future__ import annotations

from typing import Any

import asyncpg

from referral_events import CloudEvent, topics
from referral_events.contracts import link as ev
from referral_events.contracts.attribution import (
    ConversionAttributed,
    ConversionRefunded,
    RewardRulePromoted,
)
from referral_events.contracts.privacy import PrivacyRequested
from referral_events.inbox import Handler
from reward_service.clock import Clock, utc_now
from reward_service.earning import handlers
from reward_service.privacy.handlers import on_privacy_requested
from reward_service.programs import handlers as programs
from reward_service.rules import handlers as rules
from servicekit.runtime import ConsumerSpec


def consumers(clock: Clock = utc_now) -> list[ConsumerSpec]:
    """The consumer groups, with the service's clock bound into the handlers (timestamps such as
    released_at and voided_at follow the injected clock in tests)."""

    async def attributed(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, ConversionAttributed)
        await handlers.on_conversion_attributed(conn, event, payload, clock())

    async def refunded(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, ConversionRefunded)
        await handlers.on_conversion_refunded(conn, event, payload, clock())

    async def promoted(conn: asyncpg.Connection, event: CloudEvent, payload: Any) -> None:
        assert isinstance(payload, RewardRulePromoted)
        await rules.on_rule_promoted(conn, event, payload, clock())

    routes: dict[str, Handler] = {
        ConversionAttributed.TYPE: attributed,
        ConversionRefunded.TYPE: refunded,
        # the programs and advocates heard of: reads under others answer 404 (programs/)
        ev.ProgramCreated.TYPE: programs.on_program,
        ev.ProgramUpdated.TYPE: programs.on_program,
        ev.AdvocateEnrolled.TYPE: programs.on_advocate,
        ev.AdvocateUpdated.TYPE: programs.on_advocate,
        # link-service's segments and advocates' attribute changes, for rule variants
        ev.ProgramAudienceChanged.TYPE: rules.on_audience_changed,
        ev.AdvocateAttributesChanged.TYPE: rules.on_attributes_changed,
        # an experiment's winner promoted: the program's rule from now on
        RewardRulePromoted.TYPE: promoted,
        # personal data requests come from link-service (its privacy feature)
        PrivacyRequested.TYPE: on_privacy_requested,
    }
    return [
        ConsumerSpec(
            group="reward-service",
            topics=[topics.ATTRIBUTION_EVENTS, topics.LINK_EVENTS],
            handlers=routes,
        )
    ]


CONSUMERS = consumers()

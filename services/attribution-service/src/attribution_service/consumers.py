"""The routing table from consumed event types to handlers."""

from __future__ import annotations

from attribution_service.programs import handlers
from referral_events import topics
from referral_events.contracts import link as ev
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
    )
]

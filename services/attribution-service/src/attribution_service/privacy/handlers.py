"""attribution-service's part of a personal data request (servicekit.privacy): its
declarations (registry), then this service's own events still waiting to be folded into
analytics, rewritten without the person (the fold keeps its counts); all in the request's
inbox transaction with the confirmation."""

from __future__ import annotations

import asyncpg

from attribution_service.events import EVENTS
from attribution_service.privacy.registry import PERSONAL_DATA
from servicekit.privacy import Subject, request_handler, scrub_text_column

SERVICE = "attribution-service"


async def scrub_waiting(conn: asyncpg.Connection, subject: Subject) -> dict[str, int]:
    n = await scrub_text_column(conn, "analytics_emitted", "event_id", "payload", subject, "true")
    return {"analytics_emitted": n} if n else {}


on_privacy_requested = request_handler(SERVICE, PERSONAL_DATA, EVENTS, scrub_waiting)

"""notification-service's part of a personal data request (servicekit.privacy): its
declarations (registry), then the webhook messages that copied events naming the person,
rewritten; all in the request's inbox transaction with the confirmation."""

from __future__ import annotations

import asyncpg

from notification_service.events import EVENTS
from notification_service.privacy.registry import PERSONAL_DATA
from servicekit.privacy import Subject, request_handler, scrub_text_column

SERVICE = "notification-service"


async def scrub_messages(conn: asyncpg.Connection, subject: Subject) -> dict[str, int]:
    n = await scrub_text_column(
        conn, "webhook_messages", "id", "body", subject, "t.tenant_id = s.tenant"
    )
    return {"webhook_messages": n} if n else {}


on_privacy_requested = request_handler(SERVICE, PERSONAL_DATA, EVENTS, scrub_messages)

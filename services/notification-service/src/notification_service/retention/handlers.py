"""The retention steps notification-service's pruner runs (servicekit.retention)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from notification_service.email import repository as email
from notification_service.webhooks import repository as webhooks
from servicekit.retention import RetentionStep


def steps(email_body_days: float, webhook_body_days: float) -> list[RetentionStep]:
    mails, messages = timedelta(days=email_body_days), timedelta(days=webhook_body_days)

    async def email_bodies(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
        return await email.clear_old_bodies(conn, now - mails, limit)

    async def webhook_bodies(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
        return await webhooks.clear_old_bodies(conn, now - messages, limit)

    return [
        RetentionStep("emails", email_bodies),
        RetentionStep("webhook_messages", webhook_bodies),
    ]

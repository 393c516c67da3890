"""The retention steps link-service's pruner runs (servicekit.retention)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from link_service.retention import repository
from servicekit.retention import RetentionStep


def steps(click_retention_days: int) -> list[RetentionStep]:
    keep = timedelta(days=click_retention_days)

    async def clicks(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
        return await repository.roll_up_clicks(conn, now - keep, limit)

    return [RetentionStep("clicks", clicks)]

"""The retention steps attribution-service's pruner runs (servicekit.retention)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from attribution_service.programs.domain import DEFAULT_SETTINGS, ProgramSettings
from attribution_service.retention import repository
from servicekit.retention import RetentionStep


async def prune_clicks(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """One batch: each program's clicks past its click retention (ProgramSettings)."""
    before = {
        r["program_id"]: now - ProgramSettings.model_validate(r["settings"]).click_retention()
        for r in await repository.program_settings(conn)
    }
    return await repository.delete_clicks(
        conn, before, now - DEFAULT_SETTINGS.click_retention(), limit
    )


STEPS = [RetentionStep("clicks", prune_clicks)]

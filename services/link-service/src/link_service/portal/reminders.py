"""The share-reminder worker: a background loop of every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from link_service.config import Settings
from link_service.domain import Links
from link_service.portal import handlers
from servicekit.db import DB_ERRORS
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)


class ReminderWorker:
    """Works through the reminder schedule in batches, one transaction per batch. The schedule
    is rows in Postgres (portal_reminders), so a restart loses nothing and SKIP LOCKED keeps
    two replicas off the same reminder."""

    def __init__(self, rt: Runtime, settings: Settings) -> None:
        self._rt = rt
        self._links = Links(settings.public_base_url)
        self._batch = settings.reminder_batch_size
        self._poll = settings.reminder_poll_interval_seconds
        self._stopping = False
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping:
            try:
                async with self._rt.transaction() as conn:
                    handled = await handlers.send_due_reminders(
                        conn, datetime.now(UTC), self._links, self._batch
                    )
            except DB_ERRORS as exc:
                log.warning("share reminders failed, retrying: %r", exc)
                handled = 0
            if handled < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._poll)
                self.wake.clear()

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()

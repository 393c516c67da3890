"""The bulk-enrollment worker: a background loop of every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from link_service.config import Settings
from link_service.domain import Links
from link_service.enrollment import handlers
from servicekit.db import DB_ERRORS
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)


class EnrollmentWorker:
    """Works through bulk-enrollment jobs chunk by chunk, one transaction per chunk. All state
    is in Postgres, so a restarted (or another) replica resumes after the last committed
    chunk; SKIP LOCKED keeps two replicas off the same job at the same time."""

    def __init__(self, rt: Runtime, settings: Settings) -> None:
        self._rt = rt
        self._links = Links(settings.public_base_url)
        self._chunk = settings.enrollment_chunk_rows
        self._poll = settings.enrollment_poll_interval_seconds
        self._stopping = False
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping:
            try:
                async with self._rt.transaction() as conn:
                    done = await handlers.enroll_chunk(conn, self._links, self._chunk)
            except DB_ERRORS as exc:
                log.warning("enrollment chunk failed, retrying: %r", exc)
                done = None
            if done is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._poll)
                self.wake.clear()

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()

"""The bulk-enrollment worker: a background loop of every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

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
        self._max_attempts = settings.enrollment_max_attempts
        self._stopping = False
        self.wake = asyncio.Event()
        # Per job: chunk failures, and until when it rests (exponential backoff), so
        # the other jobs keep moving meanwhile. Kept per replica: a job fails after at most
        # max_attempts tries on each.
        self._failures: dict[str, int] = {}
        self._resting: dict[str, float] = {}

    async def _failed(self, job_id: str, cause: BaseException | None) -> None:
        attempts = self._failures.get(job_id, 0) + 1
        self._failures[job_id] = attempts
        if attempts < self._max_attempts:
            log.warning("enrollment job %s: chunk failed (attempt %d): %r", job_id, attempts, cause)
            self._resting[job_id] = time.monotonic() + min(self._poll * 2**attempts, 60.0)
            return
        log.error("enrollment job %s failed after %d attempts: %r", job_id, attempts, cause)
        reason = f"not processed: the job failed after {attempts} attempts ({type(cause).__name__})"
        try:
            async with self._rt.transaction() as conn:
                await handlers.fail_enrollment_job(conn, job_id, reason)
        except DB_ERRORS as exc:
            log.warning("enrollment job %s: could not record its failure: %r", job_id, exc)
            return
        self._failures.pop(job_id, None)

    async def run(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            for job_id in [j for j, until in self._resting.items() if until <= now]:
                del self._resting[job_id]
            try:
                async with self._rt.transaction() as conn:
                    done = await handlers.enroll_chunk(
                        conn, self._links, self._chunk, self._resting.keys()
                    )
            except handlers.ChunkFailed as exc:
                await self._failed(exc.job_id, exc.__cause__)
                done = 0
            except DB_ERRORS as exc:
                log.warning("enrollment chunk failed, retrying: %r", exc)
                done = None
            except Exception:
                # Never let the loop die: every workspace's enrollment would stop with it.
                log.exception("enrollment chunk failed")
                done = None
            if done is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._poll)
                self.wake.clear()

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()

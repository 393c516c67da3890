"""The email sender: the background worker that drains the email queue over SMTP.

Shaped like the webhook dispatcher, for the same reasons: mails are rows (a restart loses
none); a short transaction claims due rows with a lease; a second one addresses and renders
each (suppression and consent are checked here, at the last moment, as well as the contact's
current address and locale); SMTP runs with no transaction open; a third records the outcome
and writes email.sent to the outbox. A crash after the SMTP server accepted a mail but before
it was recorded sends it again when the lease ends, with the same Message-ID: SMTP has no
idempotency key, so this window is the one duplicate left (documented in the README).

Outcomes: accepted -> sent; a 5xx reply (the recipient refused: a hard bounce) -> failed and
the address suppressed as bounced; 4xx or no connection -> retried on
EMAIL_RETRY_SCHEDULE_SECONDS, then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import aiosmtplib
import asyncpg

from notification_service.clock import Clock, utc_now
from notification_service.config import Settings
from notification_service.email import domain, queue
from servicekit.db import DB_ERRORS
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

LEASE_MARGIN = timedelta(seconds=60)


class EmailSender:
    def __init__(self, rt: Runtime, settings: Settings, *, clock: Clock = utc_now) -> None:
        self._rt = rt
        self._s = settings
        self._clock = clock
        self._lease = timedelta(seconds=settings.smtp_timeout_seconds) + LEASE_MARGIN
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._send_due()
                except DB_ERRORS as exc:
                    log.warning("email sender cannot claim mails, retrying: %r", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), self._s.email_poll_interval_seconds
                    )
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stopping.set()

    async def _send_due(self) -> None:
        capacity = self._s.email_max_in_flight - len(self._tasks)
        if capacity <= 0:
            return
        now = self._clock()
        async with self._rt.transaction() as conn:
            rows = await queue.claim(conn, now=now, lease_until=now + self._lease, limit=capacity)
        for row in rows:
            task = asyncio.create_task(self._one(row), name=f"email:{row['id']}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, row: asyncpg.Record) -> None:
        try:
            async with self._rt.transaction() as conn:
                outgoing = await queue.prepare(
                    conn,
                    row,
                    now=self._clock(),
                    sender=self._s.email_from,
                    base_url=self._s.public_base_url,
                    unsubscribe_key=self._s.email_unsubscribe_key,
                    retry_schedule=self._s.email_retry_schedule_seconds,
                )
            if outgoing is None:
                return
            code, error = await self._smtp(outgoing.envelope)
            async with self._rt.transaction() as conn:
                outcome = await queue.record_smtp(
                    conn,
                    outgoing,
                    code,
                    error,
                    now=self._clock(),
                    retry_schedule=self._s.email_retry_schedule_seconds,
                )
            if outcome == "sent":
                self.sent += 1
            else:
                log.info("email %s (%s): %s -> %s", row["id"], row["template"], error, outcome)
        except Exception:
            log.exception("email %s not settled; it is tried again when its lease ends", row["id"])

    async def _smtp(self, envelope: domain.Envelope) -> tuple[int | None, str | None]:
        """(None, None) when accepted; else the reply code (0: no reply) and what went wrong."""
        message = domain.build_message(envelope)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._s.smtp_host,
                port=self._s.smtp_port,
                username=self._s.smtp_username,
                password=self._s.smtp_password,
                use_tls=self._s.smtp_use_tls,
                start_tls=self._s.smtp_starttls,
                timeout=self._s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused is not None else 550
            return code, f"recipient refused: {code} {getattr(refused, 'message', '')}"[:500]
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, f"SMTP {exc.code} {exc.message}"[:500]
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:500]
        return None, None

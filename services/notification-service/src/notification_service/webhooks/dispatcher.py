"""The webhook dispatcher: the background worker that sends due deliveries.

Why it is shaped this way:
- Retries are rows, not timers. A delivery's next attempt is `next_attempt_at` in Postgres, so
  a restart, a deploy or a crash loses none; any replica may send any delivery.
- No transaction is open while a receiver is being called. A short transaction claims due
  deliveries (`FOR UPDATE SKIP LOCKED`, then the attempt is counted and `next_attempt_at`
  moved to a lease's end); the POST runs with no connection held; a second short transaction
  records the attempt, settles the delivery and writes its delivery.* event to the outbox. A
  dispatcher that dies mid-request leaves a lease that runs out, and the delivery is sent
  again: delivery is at least once, and receivers deduplicate on webhook-id.
- Woken, not only polling: writers of due deliveries NOTIFY (delivered at their commit) and
  the dispatcher LISTENs on a connection of its own, so a new delivery goes out within
  milliseconds. The poll stays, for retries that fall due and for notifications missed while
  the listening connection was down. A finished request wakes it too (a slot is free).
- One slow endpoint never holds up the others: requests run as concurrent tasks, at most
  `webhook_per_endpoint_concurrency` per endpoint and `webhook_max_in_flight` attempts in all
  (recording included). A hanging endpoint fills only its own slots until the attempt timeout;
  an endpoint's slot is free again as soon as its request is over, while the result is still
  being recorded (the delivery's lease keeps it from being claimed again meanwhile).
- Results are recorded in batches: finished attempts queue up, and a few recorder tasks each
  write whatever has queued (up to RECORD_BATCH) in one transaction and one statement. Every
  attempt still gets its own rows and its own outbox event; what is shared is the round trip
  and the commit, so throughput is not bounded by one of each per delivery.
- The POST goes straight to the endpoint's httpx transport (its own small connection pool, the
  SSRF guard in its connect): httpx's client layer adds cookies, auth and redirect handling,
  none of which a webhook wants, for about a fifth of the request's CPU.
- The body is the Standard Webhooks shape `{"type", "timestamp", "data"}` rather than our
  CloudEvent envelope: integrators get the structure their Standard Webhooks tooling expects,
  and our internal envelope (sources naming internal services, extension attributes) can change
  without changing a public contract. The CloudEvent id is kept as webhook-id.
- Time comes from an injected clock and jitter from an injected random source, so tests check
  the retry spacing without sleeping through it. Latency is measured on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from notification_service.clock import Clock, utc_now
from notification_service.config import Settings
from notification_service.metrics import WEBHOOK_ATTEMPTS
from notification_service.webhooks import attempts, domain, repository, signing, urlguard
from referral_events.database_errors import INFRASTRUCTURE_ERRORS
from referral_events.outbox import enqueue_rows
from referral_events.tracing import continued_from_event
from servicekit.db import DB_ERRORS
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

USER_AGENT = "referral-platform-webhooks/1.0"
# How long past the request timeout a claim stays ours before another replica may take it.
LEASE_MARGIN = timedelta(seconds=60)
ERROR_TEXT_LIMIT = 500
# Attempts recorded per transaction, and transactions recording at once.
RECORD_BATCH = 200
RECORDERS = 4
# Endpoints whose connection pools are kept open (least recently used beyond this close).
MAX_CLIENTS = 1000
# How often the listening connection is checked when no notification arrives, and the pause
# before listening again after it was lost.
LISTEN_CHECK_SECONDS = 30.0
LISTEN_RETRY_SECONDS = 1.0


@dataclass
class _Finished:
    finished: attempts.Finished
    recorded: asyncio.Future[domain.Decision | None]


class Dispatcher:
    def __init__(
        self,
        rt: Runtime,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        rand: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: urlguard.Resolver = urlguard.system_resolver,
    ) -> None:
        self._rt = rt
        self._clock = clock
        self._rand = rand
        # One small connection pool per endpoint, as large as the endpoint's concurrency:
        # httpcore's pool does work proportional to its connections on every request, so one
        # pool of hundreds of connections costs more CPU than the requests themselves. It also
        # keeps endpoints' connections apart. A transport passed in (tests) is shared instead.
        self._limits = httpx.Limits(
            max_connections=settings.webhook_per_endpoint_concurrency,
            max_keepalive_connections=settings.webhook_per_endpoint_concurrency,
        )
        self._shared = transport
        self._resolver = resolver
        # Loading the CA bundle takes tens of milliseconds: once, shared by every pool.
        self._ssl_context = httpx.create_ssl_context()
        # Unless private destinations are allowed (tests, local runs), every connection goes
        # through the SSRF guard again at connect time: DNS may have changed since the URL was
        # vetted.
        self._guarded = not settings.webhook_allow_private_networks
        self._transports: OrderedDict[str, httpx.AsyncBaseTransport] = OrderedDict()
        # Parsed once per URL: parsing costs more than building the rest of the request.
        self._urls: dict[str, httpx.URL] = {}
        self._disable_after = timedelta(days=settings.webhook_disable_after_failing_days)
        self._policy = domain.RetryPolicy.from_seconds(
            settings.webhook_retry_schedule_seconds, settings.webhook_retry_jitter
        )
        self._timeout = settings.webhook_timeout_seconds
        # httpx's per-phase timeouts, as a client would pass them; `post` bounds the whole.
        self._timeouts = httpx.Timeout(self._timeout).as_dict()
        self._lease = timedelta(seconds=self._timeout) + LEASE_MARGIN
        self._poll_interval = settings.webhook_poll_interval_seconds
        self._per_endpoint = settings.webhook_per_endpoint_concurrency
        self._max_in_flight = settings.webhook_max_in_flight
        self._body_limit = settings.webhook_response_body_limit
        self._box = settings.secret_box()
        self._dsn = settings.database_url
        self._role = settings.db_role_settings()
        self._schema = rt.spec.schema
        # Requests in flight per endpoint (what its slots hold).
        self._in_flight: dict[str, int] = {}
        # Attempts from claim until recorded: what webhook_max_in_flight bounds.
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._finished: asyncio.Queue[_Finished] = asyncio.Queue()
        self.attempts_sent = 0

    async def run(self) -> None:
        helpers = [
            asyncio.create_task(self._recorder(), name=f"webhook-recorder:{i}")
            for i in range(RECORDERS)
        ]
        helpers.append(asyncio.create_task(self._listen(), name="webhook-listener"))
        try:
            try:
                while not self._stopping.is_set():
                    try:
                        await self._dispatch_once()
                    except DB_ERRORS as exc:
                        log.warning("dispatcher cannot claim deliveries, retrying: %r", exc)
                    await self._idle()
            finally:
                # Let attempts in flight finish and be recorded before the pools close.
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                transports = [*self._transports.values()]
                self._transports.clear()
                await asyncio.gather(*(t.aclose() for t in transports), return_exceptions=True)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def stop(self) -> None:
        """Claim nothing more; `run` returns once the attempts in flight are recorded."""
        self._stopping.set()
        self._wake.set()

    async def _listen(self) -> None:
        """Turn NOTIFYs of due deliveries into wake-ups, on a connection of its own (a pooled
        one would lose its LISTEN when returned). Reconnects for as long as the dispatcher
        runs; the poll covers the gaps, and each (re)connect wakes the loop once in case a
        notification was missed meanwhile."""
        channel = repository.deliveries_channel(self._schema)
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    server_settings={
                        **self._role,
                        "search_path": self._schema,
                        "application_name": f"{self._schema}-webhook-listener",
                    },
                )
                await self._listen_on(conn, channel)
            except Exception as exc:
                # Whatever it was, the poll still delivers; listening resumes after a pause.
                log.warning("webhook listener lost its connection, reconnecting: %r", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LISTEN_RETRY_SECONDS)

    async def _listen_on(self, conn: asyncpg.Connection, channel: str) -> None:
        """Returns when the connection is lost (raises when a check finds it dead)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(channel, lambda *_: self._wake.set())
        self._wake.set()
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), LISTEN_CHECK_SECONDS)
            if not lost.is_set():
                # A half-open connection would never report its loss on its own.
                await conn.fetchval("SELECT 1", timeout=LISTEN_CHECK_SECONDS)

    def _transport_for(self, endpoint_id: str) -> httpx.AsyncBaseTransport:
        if self._shared is not None:
            return self._shared
        transport = self._transports.get(endpoint_id)
        if transport is not None:
            self._transports.move_to_end(endpoint_id)
            return transport
        transport = (
            urlguard.GuardedTransport(
                self._resolver, limits=self._limits, ssl_context=self._ssl_context
            )
            if self._guarded
            # Proxies come from explicit configuration, not from the process environment.
            else httpx.AsyncHTTPTransport(
                limits=self._limits, verify=self._ssl_context, trust_env=False
            )
        )
        self._transports[endpoint_id] = transport
        self._evict_idle_transports()
        return transport

    def _evict_idle_transports(self) -> None:
        """Bounded: the least recently used pools of endpoints with nothing in flight close."""
        excess = len(self._transports) - MAX_CLIENTS
        for endpoint_id in list(self._transports):
            if excess <= 0:
                break
            if endpoint_id in self._in_flight:
                continue
            transport = self._transports.pop(endpoint_id)
            task = asyncio.create_task(
                transport.aclose(), name=f"webhook-transport-close:{endpoint_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            excess -= 1

    async def _idle(self) -> None:
        # Woken early by a notification, when a request finishes (a slot is free) or on stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_interval)
        self._wake.clear()

    async def _dispatch_once(self) -> int:
        capacity = self._max_in_flight - len(self._tasks)
        if capacity <= 0:
            return 0
        now = self._clock()
        # The claim is one statement, atomic on its own: no BEGIN and COMMIT round trips.
        async with self._rt.pool.acquire() as conn:
            claims = await attempts.claim_due(
                conn,
                repository.ClaimRequest(
                    now=now,
                    lease_until=now + self._lease,
                    limit=capacity,
                    per_endpoint=self._per_endpoint,
                    in_flight=dict(self._in_flight),
                ),
            )
        for claim in claims:
            self._in_flight[claim.endpoint_id] = self._in_flight.get(claim.endpoint_id, 0) + 1
            task = asyncio.create_task(
                self._attempt(self._transport_for(claim.endpoint_id), claim),
                name=f"webhook:{claim.delivery_id}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claims)

    async def _attempt(self, transport: httpx.AsyncBaseTransport, claim: domain.Claim) -> None:
        try:
            attempted_at = self._clock()
            try:
                result = await self._send(transport, claim, attempted_at)
            finally:
                self._release(claim.endpoint_id)
            await self._record(claim, result, attempted_at)
        except Exception:
            log.exception(
                "attempt %d of delivery %s not recorded; it is sent again when its lease ends",
                claim.attempt,
                claim.delivery_id,
            )

    async def _send(
        self, transport: httpx.AsyncBaseTransport, claim: domain.Claim, attempted_at: datetime
    ) -> domain.AttemptResult:
        if not claim.secrets:
            return domain.AttemptResult(None, 0, error="endpoint has no signing secret")
        if claim.body is None:  # cleared by retention between a resend and this claim
            return domain.AttemptResult(None, 0, error="the message's body is past its retention")
        secrets = [self._box.open(s) for s in claim.secrets]
        headers = signing.signature_headers(claim.message_id, attempted_at, claim.body, secrets)
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        url: httpx.URL | str | None = self._urls.get(claim.url)
        if url is None:
            if len(self._urls) >= MAX_CLIENTS:
                self._urls.clear()
            try:
                url = self._urls[claim.url] = httpx.URL(claim.url)
            except httpx.InvalidURL:
                url = claim.url  # `post` reports it as the attempt's error
        # The POST joins the trace of the event it announces (issue #7).
        with continued_from_event(claim.message_id):
            result = await post(
                transport,
                url,
                claim.body.encode(),
                headers,
                total_seconds=self._timeout,
                body_limit=self._body_limit,
                timeouts=self._timeouts,
            )
        self.attempts_sent += 1
        WEBHOOK_ATTEMPTS.labels(outcome="succeeded" if result.ok else "failed").inc()
        return result

    def _release(self, endpoint_id: str) -> None:
        """The endpoint's slot is free once its request is over; the loop may claim again."""
        left = self._in_flight.get(endpoint_id, 1) - 1
        if left > 0:
            self._in_flight[endpoint_id] = left
        else:
            self._in_flight.pop(endpoint_id, None)
        self._wake.set()

    async def _record(
        self, claim: domain.Claim, result: domain.AttemptResult, attempted_at: datetime
    ) -> None:
        recorded: asyncio.Future[domain.Decision | None] = (
            asyncio.get_running_loop().create_future()
        )
        await self._finished.put(
            _Finished(attempts.Finished(claim, result, attempted_at), recorded)
        )
        decision = await recorded
        if decision is None:
            log.warning(
                "attempt %d of delivery %s finished after its lease; a newer attempt decides",
                claim.attempt,
                claim.delivery_id,
            )
        elif decision.outcome != "delivered":
            log.info(
                "delivery %s attempt %d to %s: %s -> %s",
                claim.delivery_id,
                claim.attempt,
                claim.endpoint_id,
                result.describe(),
                decision.outcome,
            )

    async def _recorder(self) -> None:
        while True:
            batch = [await self._finished.get()]
            while len(batch) < RECORD_BATCH and not self._finished.empty():
                batch.append(self._finished.get_nowait())
            # Endpoint rows are locked in one order by every recorder: no deadlocks between
            # batches that change the same endpoints' health.
            batch.sort(
                key=lambda item: (item.finished.claim.endpoint_id, item.finished.claim.delivery_id)
            )
            try:
                decisions = await self._record_batch([item.finished for item in batch])
            except Exception:
                # One attempt that cannot be recorded must not sink the others: alone, each
                # either records or fails on its own (and is sent again after its lease).
                for item in batch:
                    try:
                        [decision] = await self._record_batch([item.finished])
                        item.recorded.set_result(decision)
                    except Exception as exc:
                        item.recorded.set_exception(exc)
            else:
                for item, decision in zip(batch, decisions, strict=True):
                    item.recorded.set_result(decision)

    async def _record_batch(self, batch: list[attempts.Finished]) -> list[domain.Decision | None]:
        # The requests went out; losing their record to a database blip would send them again.
        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(INFRASTRUCTURE_ERRORS),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with retry:
                async with self._rt.transaction() as conn:
                    events: attempts.Pending = []
                    decisions = await attempts.record_attempts(
                        conn,
                        batch,
                        now=self._clock(),
                        policy=self._policy,
                        rand=self._rand,
                        response_body_limit=self._body_limit,
                        disable_after=self._disable_after,
                        outbox=events,
                    )
                    await enqueue_rows(conn, events)
                    return decisions
        raise AssertionError("unreachable: tenacity re-raises the last error")


async def post(
    transport: httpx.AsyncBaseTransport,
    url: httpx.URL | str,
    body: bytes,
    headers: dict[str, str],
    *,
    total_seconds: float,
    body_limit: int,
    timeouts: dict[str, float | None] | None = None,
) -> domain.AttemptResult:
    """One POST through `transport`, bounded as a whole by `total_seconds` (httpx's own
    timeouts are per phase, so a receiver dripping bytes would never hit them). Redirects are
    not followed (a transport never does): a 3xx is a failed attempt, since a redirect could
    lead anywhere, the private network included. No cookies are kept between attempts. Once
    the status line is in, the status counts: a failure while reading the rest only shortens
    the logged body."""
    status: int | None = None
    retry_after: str | None = None
    chunks: list[bytes] = []
    error: str | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(total_seconds):
            request = httpx.Request(
                "POST",
                url,
                content=body,
                headers=headers,
                extensions={
                    "timeout": timeouts
                    if timeouts is not None
                    else httpx.Timeout(total_seconds).as_dict()
                },
            )
            response = await transport.handle_async_request(request)
            try:
                status = response.status_code
                retry_after = response.headers.get("retry-after")
                size = 0
                if body_limit > 0:
                    response.request = request
                    # Raw bytes, decoded here with the cap on the decoded output: httpx would
                    # inflate each raw chunk whole first (a 64 KiB gzip bomb is 64 MiB).
                    decoder = _decoder(response.headers.get("content-encoding"))
                    if response.is_stream_consumed:  # read already (a test's MockTransport)
                        decoder, raws = None, _once(response.content)
                    else:
                        raws = response.aiter_raw()
                    async for raw in raws:
                        piece = (
                            decoder.decompress(raw, body_limit - size)
                            if decoder is not None
                            else raw[: body_limit - size]
                        )
                        chunks.append(piece)
                        size += len(piece)
                        if size >= body_limit:
                            break
            finally:
                await response.aclose()
    except TimeoutError:
        if status is None:
            error = f"timed out after {total_seconds:g}s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError, zlib.error) as exc:
        if status is None:
            error = _describe(exc)
    latency_ms = round((time.perf_counter() - started) * 1000)
    text = b"".join(chunks).decode("utf-8", errors="replace") or None
    return domain.AttemptResult(status, latency_ms, text, error, retry_after)


def _decoder(content_encoding: str | None) -> zlib._Decompress | None:
    """A zlib decompressor for gzip/deflate bodies (bounded per call by max_length); None for
    an identity body, or an encoding we do not decode (kept as raw bytes, capped alike)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        # MAX_WBITS | 32: a zlib or gzip header, detected.
        return zlib.decompressobj(zlib.MAX_WBITS | 32)
    return None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _describe(exc: BaseException) -> str:
    detail = str(exc).strip()
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text[:ERROR_TEXT_LIMIT]

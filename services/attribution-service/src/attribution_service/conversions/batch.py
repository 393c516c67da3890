"""Group commit of POST /v1/conversions.

A request hands its checked conversion (handlers.prepare_conversion) to a writer queue and
waits; `CONVERSION_WRITERS` writer loops each take what has queued up (at most
`CONVERSION_BATCH_MAX`) and decide all of it in ONE transaction, the way a state machine applies
a batch: every fact the batch's decisions need is read first, set-wise (one read of every
conversion's evidence context, with the screening facts of the named code's advocate read ahead
and whether its key or order is taken; one read of the other screening facts), then the one
decision (decision.decide, the single path's too) is applied to each conversion in order, and
what was decided is written set-wise (handlers.record: the click links, the referrals, the
conversions inserted already decided, the reviews and the outbox rows, each one statement for
the whole batch). Only after the commit does each request get its answer, its own result or its
own 4xx.

The outcome is that of processing the batch's requests one after another, in queue order (a
test runs a batch both ways and compares answers, rows and events):

- The batch is cut into runs of requests with distinct idempotency keys, (type, order id) and
  customers; a request repeating one of those starts the next run, which sees the earlier run's
  rows as committed (the same transaction), so a repeat answers with the first result or 409
  exactly as it would have. A custom type goes the one-by-one way (handlers.submit_prepared)
  at its place.
- Within a run every read is taken before any of the run's rows exist; what an earlier
  conversion of the run adds to a later one's screening (an advocate's velocity, signups from
  one IP hash or device, the advocate's own sightings, the ring rule's neighbours, the
  advocate's denied referrals) is folded forward (decision.Earlier).
  Everything else a decision reads belongs to the conversion's own customer, which no other
  conversion of the run shares.
- A conversion naming a click or code not seen yet takes the evidence lock and reads its
  context again (handlers.wait_or_decide's protocol) before the run locks any referral; it is
  then decided with the others, or inserted waiting (and committed under the lock).
- Should another transaction take a key or (type, order id) between the read and the insert,
  the insert says so (handlers.Raced) and the batch goes the one-by-one way below.

A bad request fails alone: its refusal is a DomainError for that request only (nothing was
written for it). A database error rolls the whole batch back (nothing was answered yet) and
its requests are then run one by one, each in its own transaction, so only the affected ones
fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from attribution_service.conversions import decision, handlers, repository
from attribution_service.conversions.decision import Chosen, Decided
from attribution_service.conversions.facts import (
    Conversion,
    Evidence,
    RingRead,
    Screening,
    ScreeningAsk,
)
from attribution_service.conversions.handlers import NewConversion
from referral_events.tracing import continued_from, current_context_carrier
from servicekit.db import transaction
from servicekit.problems import DomainError
from servicekit.runtime import Runtime

log = logging.getLogger(__name__)

# A request's latency is mostly its batch's transaction: worth watching in production. In the
# default registry (one writer per process), so every app's /metrics shows them.
BATCH_SECONDS = Histogram(
    "attribution_conversion_batch_seconds",
    "Duration of one group commit of conversions (decided, written and committed).",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "attribution_conversion_batch_size",
    "Requests decided by one group commit of conversions.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_RETRIES = Counter(
    "attribution_conversion_batch_retries",
    "Group commits rolled back and run again one request at a time (database error, race).",
)

# (the conversion, created by this request) or the request's own refusal
Outcome = tuple[Mapping[str, Any], bool] | DomainError


def _segments(batch: Sequence[NewConversion]) -> list[tuple[bool, list[int]]]:
    """The batch cut, in order, into runs decided set-based (True) and single requests that go
    the one-by-one way (False: custom types, checked against the tenant's programs first). A
    run ends before a request sharing its idempotency key, (type, order id) or customer with
    one in the run: that one then sees the run's rows as committed, as it would have."""
    out: list[tuple[bool, list[int]]] = []
    seen: set[tuple[str, ...]] = set()
    run: list[int] = []
    for i, new in enumerate(batch):
        c = new.conversion
        keys: set[tuple[str, ...]] = {("customer", c.tenant_id, c.customer_id)}
        if c.idempotency_key is not None:
            keys.add(("key", c.tenant_id, c.idempotency_key))
        if c.order_id is not None:
            keys.add(("order", c.tenant_id, c.type, c.order_id))
        alone = c.custom_type is not None
        if run and (alone or keys & seen):
            out.append((True, run))
            run, seen = [], set()
        if alone:
            out.append((False, [i]))
            continue
        run.append(i)
        seen |= keys
    if run:
        out.append((True, run))
    return out


async def submit_many(
    conn: asyncpg.Connection,
    batch: Sequence[NewConversion],
    *,
    grace: timedelta,
    carriers: Sequence[Mapping[str, str]] | None = None,
) -> list[Outcome]:
    """Each request's outcome, in order, as if they had been submitted one after another in
    the caller's transaction (see the module's docstring). `carriers`: each request's trace
    context, stored with its events."""
    traces: Sequence[Mapping[str, str]] = carriers or [{} for _ in batch]
    outcomes: list[Outcome | None] = [None] * len(batch)
    for together, positions in _segments(batch):
        if together:
            await _together(conn, batch, positions, outcomes, traces, grace)
            continue
        (i,) = positions
        with continued_from(traces[i]):
            try:
                outcomes[i] = await handlers.submit_prepared(conn, batch[i], grace=grace)
            except DomainError as exc:
                outcomes[i] = exc
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


@dataclass
class _Item:
    """A new conversion of the run to decide: the evidence chosen (None: it waits for its
    evidence), the screening facts and the ring rule's read taken ahead with its evidence
    context."""

    index: int
    conversion: Conversion
    chosen: Chosen | None
    ahead: Screening | None
    ring: RingRead


async def _together(
    conn: asyncpg.Connection,
    batch: Sequence[NewConversion],
    positions: list[int],
    outcomes: list[Outcome | None],
    traces: Sequence[Mapping[str, str]],
    grace: timedelta,
) -> None:
    """One run of requests with distinct keys, orders and customers: its facts read set-wise,
    each decided in order, and everything written set-wise."""
    items: list[_Item] = []
    news = [batch[i] for i in positions]
    recs = await repository.conversion_contexts(conn, [n.conversion for n in news])
    for i, new, rec in zip(positions, news, recs, strict=True):
        conv = new.conversion
        evidence = Evidence.of(rec)
        try:
            waits = decision.admit(conv, evidence, too_old_for_lag=new.too_old_for_lag(grace))
            if rec["key_conversion_id"] is not None or rec["order_conversion_id"] is not None:
                outcomes[i] = (await handlers.existing_conversion(conn, conv), False)
                continue
        except DomainError as exc:
            outcomes[i] = exc
            continue
        chosen = None if waits else decision.choose(conv, evidence)
        items.append(_Item(i, conv, chosen, repository.read_ahead(rec, conv), RingRead.of(rec)))

    waiting = [it for it in items if it.chosen is None]
    if waiting:
        # The evidence lock, then the context read again (handlers.wait_or_decide's protocol),
        # before the run locks any referral.
        await repository.lock_evidence(
            conn,
            [
                (it.conversion.tenant_id, it.conversion.click_id, it.conversion.code_key)
                for it in waiting
            ],
        )
        for it in waiting:
            evidence = await repository.evidence_context(conn, it.conversion)
            it.ahead = None
            if not evidence.unseen(it.conversion):
                it.chosen = decision.choose(it.conversion, evidence)

    decided = _decide(items, await _screenings(conn, items))
    rows = await handlers.record(
        conn, decided, stored=False, traces=[traces[it.index] for it in items]
    )
    for it, row in zip(items, rows, strict=True):
        outcomes[it.index] = (row, True)


async def _screenings(conn: asyncpg.Connection, items: list[_Item]) -> list[Screening | None]:
    """Each item's screening facts (None: it waits, or has no candidate): those read ahead
    where they are its candidate's, the others read in one statement. None of the run's
    conversions is written yet: these are the facts before all of them."""
    got: list[Screening | None] = []
    missing: list[tuple[int, ScreeningAsk]] = []
    for n, it in enumerate(items):
        ask = it.chosen.ask() if it.chosen else None
        if ask is not None and (it.ahead is None or not it.ahead.answers(ask)):
            missing.append((n, ask))
        got.append(it.ahead if ask is not None else None)
    if missing:
        read = await repository.screening_contexts(conn, [ask for _, ask in missing])
        for (n, ask), rec in zip(missing, read, strict=True):
            got[n] = Screening.of(rec, ask)
    # The ring rule's neighbours: read ahead too (a statement more only where that read does
    # not cover the window of the chosen candidate's program).
    chosen = [it.chosen for it in items if it.chosen]
    if not chosen:
        return got
    filled = iter(
        await handlers.with_neighbours(
            conn,
            chosen,
            [s for it, s in zip(items, got, strict=True) if it.chosen],
            [it.ring for it in items if it.chosen],
        )
    )
    return [next(filled) if it.chosen else s for it, s in zip(items, got, strict=True)]


def _decide(items: list[_Item], screenings: list[Screening | None]) -> list[Decided]:
    """The one decision applied to each item in order, against its facts and what the items
    before it add to them."""
    earlier = decision.NOTHING_EARLIER
    decided: list[Decided] = []
    for it, screening in zip(items, screenings, strict=True):
        if it.chosen is None:
            d = decision.waiting(it.conversion)
        else:
            d = decision.decide(it.chosen, screening, earlier)
        earlier = earlier.then(d)
        decided.append(d)
    return decided


@dataclass
class _Request:
    new: NewConversion
    trace: dict[str, str]
    answer: asyncio.Future[tuple[Mapping[str, Any], bool]]


class ConversionWriter:
    """The writer loops of the group commit (a runtime worker: started with the service,
    stopped after the HTTP server has drained, so what is queued is committed). Each loop has a
    connection of its own, with the session settings of repository.BATCH_PLAN_SETTINGS; a batch
    run again one by one goes through the service's pool like any other request."""

    def __init__(
        self,
        rt: Runtime,
        *,
        writers: int,
        batch_max: int,
        grace: timedelta,
        linger: float = 0.0,
    ) -> None:
        self._rt = rt
        self._linger = linger
        self._in_flight = 0
        self._writers = writers
        self._batch_max = batch_max
        self._grace = grace
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._running = False
        self._stopping = False

    @property
    def accepting(self) -> bool:
        return self._running and not self._stopping

    async def submit(self, new: NewConversion) -> tuple[Mapping[str, Any], bool]:
        """The request's outcome once its batch committed; raises its DomainError."""
        answer: asyncio.Future[tuple[Mapping[str, Any], bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(_Request(new, current_context_carrier(), answer))
        return await answer

    async def run(self) -> None:
        # Accepting at once, as the service starts serving: what arrives while the writers'
        # connections open waits in the queue (or, should they not open, goes one by one).
        self._running = True
        try:
            pool = await self._rt.open_pool(
                min_size=self._writers,
                max_size=self._writers,
                role="writer",
                server_settings=repository.BATCH_PLAN_SETTINGS,
            )
        except BaseException:
            self._running = False
            while not self._queue.empty():
                queued = self._queue.get_nowait()
                if queued is not None:
                    await self._one(queued)
            raise
        try:
            await asyncio.gather(*(self._loop(pool) for _ in range(self._writers)))
        finally:
            self._running = False
            await pool.close()

    async def stop(self) -> None:
        """Commit what is queued, then leave (one end mark per loop, behind the queue)."""
        self._stopping = True
        for _ in range(self._writers):
            self._queue.put_nowait(None)

    async def _loop(self, pool: asyncpg.Pool) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._in_flight and self._linger:
                # Another batch is committing: this one may fill a little longer. Fewer,
                # larger transactions cost less CPU per conversion (one planning and one
                # commit for more of them); when idle, a request goes at once.
                await asyncio.sleep(self._linger)
            batch = [first]
            end = False
            while len(batch) < self._batch_max and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    end = True
                    break
                batch.append(nxt)
            self._in_flight += 1
            try:
                await self._commit(pool, batch)
            finally:
                self._in_flight -= 1
            if end:
                return

    async def _commit(self, pool: asyncpg.Pool, batch: list[_Request]) -> None:
        BATCH_SIZE.observe(len(batch))
        started = time.perf_counter()
        try:
            async with transaction(pool) as conn:
                outcomes = await submit_many(
                    conn,
                    [r.new for r in batch],
                    grace=self._grace,
                    carriers=[r.trace for r in batch],
                )
        except Exception as exc:
            # Rolled back, nothing answered: each request again in a transaction of its own.
            BATCH_RETRIES.inc()
            log.warning("conversion batch of %d failed, retrying one by one: %r", len(batch), exc)
            for r in batch:
                await self._one(r)
            return
        BATCH_SECONDS.observe(time.perf_counter() - started)
        for r, outcome in zip(batch, outcomes, strict=True):
            if r.answer.done():  # the client went away; the conversion is recorded anyway
                continue
            if isinstance(outcome, DomainError):
                r.answer.set_exception(outcome)
            else:
                r.answer.set_result(outcome)

    async def _one(self, r: _Request) -> None:
        try:
            with continued_from(r.trace):
                async with self._rt.transaction() as conn:
                    result = await handlers.submit_prepared(conn, r.new, grace=self._grace)
        except Exception as exc:
            if not r.answer.done():
                r.answer.set_exception(exc)
        else:
            if not r.answer.done():
                r.answer.set_result(result)

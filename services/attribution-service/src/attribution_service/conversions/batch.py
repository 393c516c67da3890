"""Group commit of POST /v1/conversions.

A request hands its checked conversion (handlers.prepare_conversion) to a writer queue and
waits; `CONVERSION_WRITERS` writer loops each take what has queued up (at most
`CONVERSION_BATCH_MAX`) and decide all of it in ONE transaction with set-based statements: one
read of every conversion's evidence context (with the screening facts of the named code's
advocate read ahead, and whether its key or order is taken), one read of the other screening
facts, then the click links, the referrals, the conversions (inserted already decided: no
insert-then-update), the reviews and the outbox rows, each one statement for the whole batch.
Only after the commit does each request get its answer, its own result or its own 4xx.

The outcome is that of processing the batch's requests one after another, in queue order (a
test runs a batch both ways and compares answers, rows and events):

- The batch is cut into runs of requests with distinct idempotency keys, (type, order id) and
  customers; a request repeating one of those starts the next run, which sees the earlier run's
  rows as committed (the same transaction), so a repeat answers with the first result or 409
  exactly as it would have. A custom type goes the one-by-one way (handlers.submit_prepared)
  at its place.
- Within a run every read is taken before any of the run's rows exist, and what an earlier
  conversion of the run adds to a later one's screening (an advocate's velocity, signups from
  one IP hash or device, the advocate's own sightings) is added in Python from the earlier
  decisions, before the pure rules (domain, fraud) decide. Everything else a decision reads
  belongs to the conversion's own customer, which no other conversion of the run shares.
- A conversion naming a click or code not seen yet takes the evidence lock and reads its
  context again (handlers.wait_or_decide's protocol) before the run locks any referral; it is
  then decided with the others, or inserted waiting (and committed under the lock).
- Should another transaction take a key or (type, order id) between the read and the insert,
  the insert says so (RunRaced) and the batch goes the one-by-one way below.

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
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

from attribution_service.conversions import domain, fraud, handlers, repository
from attribution_service.conversions.events import (
    attributed_events,
    flagged_event,
    outbox_entry,
    rejected_event,
)
from attribution_service.conversions.handlers import NewConversion
from attribution_service.metrics import FRAUD_DECISIONS
from attribution_service.programs.domain import LONGEST_NETWORK_WINDOW_HOURS
from attribution_service.reviews import repository as review_repository
from referral_events.outbox import OutboxRow, enqueue_rows
from referral_events.tracing import continued_from, current_context_carrier
from servicekit.db import transaction
from servicekit.ids import new_id
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

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class _Earlier:
    """A conversion decided earlier in the batch, as later ones' screening would have read it."""

    tenant_id: str
    customer_id: str
    type: str
    advocate_id: str | None
    status: str
    occurred_at: Any
    ip_hash: str | None
    device_hash: str | None


def _segments(batch: Sequence[NewConversion]) -> list[tuple[bool, list[int]]]:
    """The batch cut, in order, into runs decided set-based (True) and single requests that go
    the one-by-one way (False: custom types, checked against the tenant's programs first). A
    run ends before a request sharing its idempotency key, (type, order id) or customer with
    one in the run: that one then sees the run's rows as committed, as it would have."""
    out: list[tuple[bool, list[int]]] = []
    seen: set[tuple[str, ...]] = set()
    run: list[int] = []
    for i, new in enumerate(batch):
        c = new.columns
        keys: set[tuple[str, ...]] = {("customer", new.tenant_id, c["customer_id"])}
        if c["idempotency_key"] is not None:
            keys.add(("key", new.tenant_id, c["idempotency_key"]))
        if c["order_id"] is not None:
            keys.add(("order", new.tenant_id, c["type"], c["order_id"]))
        alone = c["custom_type"] is not None
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


def _with_earlier(
    facts: fraud.Facts,
    conv: Mapping[str, Any],
    cand: domain.Candidate,
    earlier: Sequence[_Earlier],
    *,
    anchor: Any,
    window: timedelta,
) -> fraud.Facts:
    """What the screening reads would have counted of the batch's earlier conversions, had they
    been committed first (the same predicates as repository._SCREENING_COLUMNS)."""
    occurred = facts.occurred_at
    hour = day = ip = device = 0
    sightings: list[fraud.Sighting] = []
    for e in earlier:
        in_day = occurred - DAY < e.occurred_at <= occurred
        if e.advocate_id == cand.advocate_id and e.status in ("attributed", "review") and in_day:
            day += 1
            hour += e.occurred_at > occurred - HOUR
        if e.tenant_id == conv["tenant_id"] and e.type == "signup" and in_day:
            ip += bool(facts.ip_hash) and e.ip_hash == facts.ip_hash
            device += bool(facts.device_hash) and e.device_hash == facts.device_hash
        if (
            facts.advocate_customer_id is not None
            and e.tenant_id == conv["tenant_id"]
            and e.customer_id == facts.advocate_customer_id
            and (e.ip_hash is not None or e.device_hash is not None)
            and anchor - window <= e.occurred_at <= anchor + window
        ):
            sightings.append(fraud.Sighting(e.occurred_at, e.ip_hash, e.device_hash))
    if not (hour or day or ip or device or sightings):
        return facts
    return replace(
        facts,
        advocate_conversions_hour=facts.advocate_conversions_hour + hour,
        advocate_conversions_day=facts.advocate_conversions_day + day,
        signups_same_ip_day=facts.signups_same_ip_day + ip,
        signups_same_device_day=facts.signups_same_device_day + device,
        advocate_sightings=(*facts.advocate_sightings, *sightings),
    )


@dataclass
class _Chosen:
    index: int
    conv: Mapping[str, Any]  # the new conversion
    ctx: Mapping[str, Any]  # its evidence context (and the screening read ahead, if any)
    choice: domain.Choice | None  # None: it waits for its evidence
    named_click: bool = False
    decision: domain.Decision | None = None
    explanation: dict[str, Any] | None = None
    review_id: str | None = None


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


class RunRaced(Exception):
    """Another transaction took an idempotency key or (type, order id) of the run after the run
    read that none was taken: the batch is rolled back and run one by one."""


async def _together(
    conn: asyncpg.Connection,
    batch: Sequence[NewConversion],
    positions: list[int],
    outcomes: list[Outcome | None],
    traces: Sequence[Mapping[str, str]],
    grace: timedelta,
) -> None:
    """One run of requests with distinct keys, orders and customers, set-based: everything is
    read first, decided in Python, and each new conversion inserted already decided."""
    chosen: list[_Chosen] = []
    news = [batch[i] for i in positions]
    ctxs = await repository.conversion_contexts(conn, [n.columns for n in news])
    for i, new, ctx in zip(positions, news, ctxs, strict=True):
        try:
            missing = handlers.evidence_missing(new, ctx, grace=grace)
        except DomainError as exc:
            outcomes[i] = exc
            continue
        if ctx["key_conversion_id"] is not None or ctx["order_conversion_id"] is not None:
            try:
                outcomes[i] = (await handlers.existing_conversion(conn, new), False)
            except DomainError as exc:
                outcomes[i] = exc
            continue
        if missing:
            chosen.append(_Chosen(i, new.columns, ctx, None))
            continue
        choice, named = handlers.choose_evidence(new.columns, ctx)
        chosen.append(_Chosen(i, new.columns, ctx, choice, named))

    waiting = [c for c in chosen if c.choice is None]
    if waiting:
        # The evidence lock, then the context read again (handlers.wait_or_decide's protocol),
        # before the run locks any referral.
        await repository.lock_evidence_many(
            conn, [(c.conv["tenant_id"], c.conv["click_id"], c.conv["code_key"]) for c in waiting]
        )
        for c in waiting:
            c.ctx = ctx = await handlers.evidence_context(conn, c.conv)
            if not handlers.awaits_evidence(c.conv, ctx):
                c.choice, c.named_click = handlers.choose_evidence(c.conv, ctx)

    await _screen(conn, chosen)
    await _record(conn, chosen, outcomes, traces)


async def _screen(conn: asyncpg.Connection, chosen: list[_Chosen]) -> None:
    """Screen and decide, in batch order, each chosen candidate; what an earlier conversion of
    the run adds to a later one's screening is added to what was read (see _with_earlier)."""
    asks = []
    for c in chosen:
        if c.choice is None or c.choice.candidate is None:
            continue
        if handlers.screening_read_ahead(c.choice, c.ctx):
            continue
        cand = c.choice.candidate
        asks.append(
            {
                "program_id": cand.program_id,
                "advocate_id": cand.advocate_id,
                "tenant_id": c.conv["tenant_id"],
                "customer_id": c.conv["customer_id"],
                "id": c.conv["id"],
                "occurred_at": c.conv["occurred_at"],
                "anchor": handlers.screening_anchor(c.conv, c.choice),
                "window": handlers.screening_window(c.choice),
                "ip_hash": c.conv["ip_hash"],
                "device_hash": c.conv["device_hash"],
            }
        )
    # none of the run's conversions is inserted yet: nothing to leave out
    read = iter(await repository.screening_contexts(conn, asks, []) if asks else [])
    earlier: list[_Earlier] = []
    for c in chosen:
        r = c.conv
        if c.choice is None:  # waits for its evidence: a pending row, as later ones see it
            earlier.append(
                _Earlier(
                    r["tenant_id"],
                    r["customer_id"],
                    r["type"],
                    None,
                    "pending",
                    r["occurred_at"],
                    r["ip_hash"],
                    r["device_hash"],
                )
            )
            continue
        chosen_cand = c.choice.candidate
        facts = None
        if chosen_cand is not None:
            if handlers.screening_read_ahead(c.choice, c.ctx):
                ctx: Mapping[str, Any] = c.ctx
                anchor = r["occurred_at"]
                window = timedelta(hours=LONGEST_NETWORK_WINDOW_HOURS)
            else:
                ctx = next(read)
                anchor = handlers.screening_anchor(r, c.choice)
                window = handlers.screening_window(c.choice)
            facts = _with_earlier(
                handlers.fraud_facts(r, c.choice, ctx),
                r,
                chosen_cand,
                earlier,
                anchor=anchor,
                window=window,
            )
        c.decision = decision = domain.decide(c.choice, facts)
        c.explanation = domain.explanation(decision)
        if decision.fraud_decision is not None:
            FRAUD_DECISIONS.labels(decision.fraud_decision).inc()
        if decision.status == "review":
            c.review_id = new_id("rev")
        earlier.append(
            _Earlier(
                r["tenant_id"],
                r["customer_id"],
                r["type"],
                decision.candidate.advocate_id if decision.candidate else None,
                decision.status,
                r["occurred_at"],
                r["ip_hash"],
                r["device_hash"],
            )
        )


async def _record(
    conn: asyncpg.Connection,
    chosen: list[_Chosen],
    outcomes: list[Outcome | None],
    traces: Sequence[Mapping[str, str]],
) -> None:
    """Write the run set-based (click links, referrals, the conversions as decided, reviews)
    and enqueue their events in batch order."""
    links = [
        (c.conv["tenant_id"], c.conv["customer_id"], c.conv["click_id"])
        for c in chosen
        if c.named_click
    ]
    if links:
        await repository.link_customer_clicks(conn, links)
    attributed = [c for c in chosen if _status(c) == "attributed"]
    refs: dict[int, Mapping[str, Any]] = {}
    if attributed:
        got = await repository.upsert_referrals(
            conn,
            [
                {
                    "referral_id": new_id("ref"),
                    "tenant_id": c.conv["tenant_id"],
                    "customer_id": c.conv["customer_id"],
                    "program_id": _cand(c).program_id,
                    "advocate_id": _cand(c).advocate_id,
                    "evidence": _cand(c).evidence,
                    "click_id": _click_id(_cand(c)),
                }
                for c in attributed
            ],
        )
        refs.update((c.index, r) for c, r in zip(attributed, got, strict=True))
    convs = []
    for c in chosen:
        d = c.decision
        cand = d.candidate if d else None
        ref = refs.get(c.index)
        convs.append(
            {
                **c.conv,
                "status": _status(c),
                "decision": d.fraud_decision if d else None,
                "program_id": cand.program_id if cand else None,
                "advocate_id": cand.advocate_id if cand else None,
                "referral_id": ref["id"] if ref else None,
                "evidence": cand.evidence if cand else None,
                "explanation": c.explanation or {},
            }
        )
    rows = await repository.insert_decided(conn, convs) if convs else []
    if rows is None:
        raise RunRaced
    reviews = [c for c in chosen if c.review_id is not None]
    if reviews:
        await review_repository.insert_reviews(
            conn,
            [
                {
                    "id": c.review_id,
                    "tenant_id": c.conv["tenant_id"],
                    "conversion_id": c.conv["id"],
                    "program_id": _cand(c).program_id,
                    "advocate_id": _cand(c).advocate_id,
                    "reasons": c.decision.reasons if c.decision else [],
                }
                for c in reviews
            ],
        )
    # The events in batch order, each row traced in its request's context, in one statement.
    entries: list[OutboxRow] = []
    for c, row in zip(chosen, rows, strict=True):
        outcomes[c.index] = (row, True)
        with continued_from(traces[c.index]):
            entries.extend(_events(c, row, refs.get(c.index)))
    await enqueue_rows(conn, entries)


def _click_id(cand: domain.Candidate) -> str | None:
    return cand.click.click_id if cand.click else None


def _status(c: _Chosen) -> str:
    return c.decision.status if c.decision is not None else "pending"


def _cand(c: _Chosen) -> domain.Candidate:
    assert c.decision is not None and c.decision.candidate is not None
    return c.decision.candidate


def _events(c: _Chosen, row: Mapping[str, Any], ref: Mapping[str, Any] | None) -> list[OutboxRow]:
    d = c.decision
    cand = d.candidate if d is not None else None
    if d is None or cand is None:
        return []
    if d.status == "attributed":
        assert ref is not None
        events = attributed_events(
            row, cand, referral_created=ref["created"], referral_click_id=ref["click_id"]
        )
    elif d.status == "rejected":
        events = [rejected_event(row, cand, d.reasons)]
    elif d.status == "review":
        assert c.review_id is not None
        events = [flagged_event(row, cand, c.review_id, d.reasons)]
    else:
        return []
    return [outbox_entry(row["tenant_id"], cand, p, e) for p, e in events]


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

"""The dispatcher's transactions: claiming due deliveries, and recording finished attempts with
what follows from each (the delivery settled or rescheduled, the endpoint's health, the
delivery.* and endpoint.disabled events), so an attempt's record and its events commit
together or not at all. Every function takes the caller's connection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from notification_service.events import EVENTS
from notification_service.webhooks import domain, repository
from notification_service.webhooks.domain import Claim
from referral_events.envelope import EventPayload
from referral_events.outbox import OutboxRow, enqueue_rows


async def claim_due(conn: asyncpg.Connection, req: repository.ClaimRequest) -> list[Claim]:
    return [Claim.from_row(r) for r in await repository.claim_due(conn, req)]


@dataclass(frozen=True)
class Finished:
    """An attempt that has come back, to be recorded."""

    claim: Claim
    result: domain.AttemptResult
    attempted_at: datetime


async def record_attempts(
    conn: asyncpg.Connection,
    attempts: Sequence[Finished],
    *,
    now: datetime,
    policy: domain.RetryPolicy,
    rand: Callable[[], float],
    response_body_limit: int,
    disable_after: timedelta = timedelta(days=5),
    outbox: Pending | None = None,
) -> list[domain.Decision | None]:
    """Log the attempts and apply what follows from each, in the caller's transaction: one
    statement logs them all and settles their deliveries. None for an attempt a newer claim of
    the same delivery superseded: it is still logged, but decides nothing. Events go to the
    outbox, or into `outbox` when the caller enqueues a batch's events together."""
    decisions = [
        domain.decide(a.result, a.claim.attempt_in_round, now, policy, rand) for a in attempts
    ]
    settled = await repository.record_attempts(
        conn,
        [
            repository.AttemptRow(
                delivery_id=a.claim.delivery_id,
                attempt=a.claim.attempt,
                attempted_at=a.attempted_at,
                status_code=a.result.status_code,
                latency_ms=a.result.latency_ms,
                response_body=domain.truncate(a.result.response_body, response_body_limit),
                error=a.result.error,
                outcome=d.outcome,
                status=domain.delivery_status(d.outcome),
                next_attempt_at=d.next_attempt_at,
                last_error=None if a.result.ok else a.result.describe(),
            )
            for a, d in zip(attempts, decisions, strict=True)
        ],
        now,
    )
    out_decisions: list[domain.Decision | None] = []
    for a, decision in zip(attempts, decisions, strict=True):
        if (a.claim.delivery_id, a.claim.attempt) not in settled:
            out_decisions.append(None)
            continue
        await _follow_up(conn, a, decision, now, disable_after, outbox)
        out_decisions.append(decision)
    return out_decisions


async def _follow_up(
    conn: asyncpg.Connection,
    finished: Finished,
    decision: domain.Decision,
    now: datetime,
    disable_after: timedelta,
    outbox: Pending | None,
) -> None:
    """The endpoint's health and the delivery.* event of a settled attempt."""
    claim, result = finished.claim, finished.result
    # The claim carries the endpoint's streak as it was: written only when this attempt
    # changes it (most attempts do not), and any later claim sees the new value.
    if result.ok == (claim.failing_since is not None):
        await repository.mark_endpoint_health(conn, claim.endpoint_id, result.ok, now)
    if decision.disable_endpoint:
        await _disable(conn, claim, "gone", result, now, outbox)
    elif not result.ok and domain.failing_too_long(claim.failing_since, now, disable_after):
        await _disable(conn, claim, "failing", result, now, outbox)
    payload = domain.delivery_event(claim, decision, result)
    if payload is not None:
        await _publish(
            conn,
            payload,
            claim,
            subject=claim.delivery_id,
            event_id=f"{claim.delivery_id}.{claim.attempt}",
            outbox=outbox,
        )


Pending = list[OutboxRow]


async def _publish(
    conn: asyncpg.Connection,
    payload: EventPayload,
    claim: Claim,
    *,
    subject: str,
    event_id: str,
    outbox: Pending | None,
) -> None:
    """To the outbox now, or into `outbox` for the caller to enqueue with the rest of its
    batch (one statement for all)."""
    row = EVENTS.row(
        payload,
        tenant_id=claim.tenant_id,
        key=claim.endpoint_id,
        subject=subject,
        event_id=event_id,
    )
    if outbox is None:
        await enqueue_rows(conn, [row])
    else:
        outbox.append(row)


async def _disable(
    conn: asyncpg.Connection,
    claim: Claim,
    reason: str,
    result: domain.AttemptResult,
    now: datetime,
    outbox: Pending | None,
) -> None:
    endpoint = await repository.disable_endpoint(conn, claim.endpoint_id, reason, now)
    if endpoint is None:
        return  # already disabled, and already told
    await _publish(
        conn,
        domain.endpoint_disabled_event(endpoint, reason, result, now),
        claim,
        subject=claim.endpoint_id,
        event_id=f"{claim.endpoint_id}.disabled.{claim.delivery_id}.{claim.attempt}",
        outbox=outbox,
    )

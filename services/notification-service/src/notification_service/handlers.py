"""Use cases of notification-service. HTTP routes, the Kafka consumer and the dispatcher all end
here; every function takes the caller's connection (the edge's transaction), changes state
through the repository and publishes through the outbox, so an attempt's record and its
delivery.* event commit together or not at all."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from notification_service import domain, repository
from notification_service.events import EVENTS
from notification_service.schemas import EndpointIn, EndpointPatch
from referral_events import CloudEvent
from referral_events.contracts import notification as out
from referral_events.envelope import EventPayload
from referral_events.outbox import OutboxRow, enqueue_rows
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput, NotFound

# --- endpoints (HTTP) -------------------------------------------------------------------------


async def create_endpoint(
    conn: asyncpg.Connection, tenant_id: str, cmd: EndpointIn, vetted_url: str
) -> tuple[asyncpg.Record, str]:
    """Returns the endpoint and its secret. `vetted_url` has passed the SSRF guard, which the
    route runs before opening the transaction (it may wait on DNS)."""
    event_types = domain.normalize_event_types(cmd.event_types)
    secret = domain.new_secret()
    description = cmd.description.strip() if cmd.description else None
    row = await repository.insert_endpoint(
        conn,
        endpoint_id=new_id("ep"),
        tenant_id=tenant_id,
        url=vetted_url,
        description=description or None,
        event_types=event_types,
        secret=secret,
    )
    return row, secret


async def get_endpoint(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str
) -> asyncpg.Record:
    endpoint = await repository.get_endpoint(conn, tenant_id, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="endpoint_id")
    return endpoint


async def list_endpoints(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await repository.list_endpoints(conn, tenant_id)


async def update_endpoint(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    cmd: EndpointPatch,
    vetted_url: str | None,
) -> asyncpg.Record:
    """`vetted_url` is the new URL after the SSRF guard (the route runs it), None to keep."""
    fields = cmd.model_fields_set
    description = cmd.description.strip() if cmd.description else None
    row = await repository.update_endpoint(
        conn,
        tenant_id,
        endpoint_id,
        url=vetted_url,
        description=description,
        clear_description="description" in fields and not description,
        event_types=(
            domain.normalize_event_types(cmd.event_types)
            if "event_types" in fields and cmd.event_types is not None
            else None
        ),
        enabled=cmd.enabled if "enabled" in fields else None,
    )
    if row is None:
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="endpoint_id")
    return row


async def rotate_secret(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    now: datetime,
    overlap: timedelta,
) -> tuple[str, datetime]:
    """A new secret, and until when the previous one(s) still sign next to it."""
    if not await repository.lock_endpoint(conn, tenant_id, endpoint_id):
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="endpoint_id")
    secret = domain.new_secret()
    expires = domain.rotation_expiry(now, overlap)
    await repository.rotate_secret(conn, endpoint_id, secret, expires)
    return secret, expires


async def resend(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str, delivery_id: str, now: datetime
) -> dict[str, Any]:
    endpoint = await get_endpoint(conn, tenant_id, endpoint_id)
    row = await repository.resend_delivery(conn, endpoint_id, delivery_id, now)
    if row is None:
        existing = await repository.get_delivery(conn, delivery_id)
        if existing is None or existing["endpoint_id"] != endpoint_id:
            raise NotFound(f"no delivery '{delivery_id}' on this endpoint", field="delivery_id")
        raise Conflict("the delivery is still pending: it is being sent", field="delivery_id")
    _require_enabled(endpoint)
    await repository.notify_deliveries_due(conn)
    return await _with_event_type(conn, row)


async def replay_failed(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    since: datetime,
    until: datetime | None,
    now: datetime,
    limit: int,
) -> int:
    endpoint = await get_endpoint(conn, tenant_id, endpoint_id)
    _require_enabled(endpoint)
    if until is not None and until <= since:
        raise InvalidInput("until must be later than since", field="until")
    replayed = await repository.replay_failed(
        conn, endpoint_id, since=since, until=until, now=now, limit=limit
    )
    if replayed:
        await repository.notify_deliveries_due(conn)
    return replayed


async def send_test_event(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str, now: datetime
) -> dict[str, Any]:
    """A `webhook.test.v1` message to this endpoint alone, sent, retried and logged like any."""
    endpoint = await get_endpoint(conn, tenant_id, endpoint_id)
    _require_enabled(endpoint)
    message_id = new_id("msg")
    await repository.insert_message(
        conn,
        message_id=message_id,
        tenant_id=tenant_id,
        event_type=domain.TEST_EVENT_TYPE,
        event_time=now,
        body=domain.render_test_body(endpoint_id, now, tenant_id),
    )
    delivery_id = new_id("dlv")
    await repository.insert_delivery(
        conn,
        delivery_id=delivery_id,
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        message_id=message_id,
        due=now,
    )
    row = await repository.get_delivery(conn, delivery_id)
    assert row is not None
    return await _with_event_type(conn, row)


async def _with_event_type(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
    return {**dict(row), "event_type": await repository.message_event_type(conn, row["message_id"])}


def _require_enabled(endpoint: asyncpg.Record) -> None:
    # Deliveries of a disabled endpoint are never claimed: queuing more would only look like
    # it worked.
    if not endpoint["enabled"]:
        raise Conflict(
            "the endpoint is disabled; enable it first (PATCH enabled: true)", field="endpoint_id"
        )


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[asyncpg.Record]
    attempts: dict[str, list[asyncpg.Record]]
    next_before: str | None


async def delivery_log(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    limit: int,
    before: str | None,
) -> DeliveryPage:
    await get_endpoint(conn, tenant_id, endpoint_id)
    if before is not None:
        anchor = await repository.get_delivery(conn, before)
        if anchor is None or anchor["endpoint_id"] != endpoint_id:
            raise InvalidInput(f"no delivery '{before}' on this endpoint", field="before")
    rows = await repository.delivery_log(conn, endpoint_id, limit=limit + 1, before=before)
    page, more = rows[:limit], len(rows) > limit
    attempts: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for attempt in await repository.attempts_of(conn, [r["id"] for r in page]):
        attempts[attempt["delivery_id"]].append(attempt)
    return DeliveryPage(page, dict(attempts), page[-1]["id"] if more else None)


# --- consumed events --------------------------------------------------------------------------


async def on_webhook_event(conn: asyncpg.Connection, event: CloudEvent, _payload: Any) -> None:
    """Fan an event out to its tenant's enabled endpoints whose filter takes it: one message,
    one delivery per endpoint, due now. Runs in the inbox transaction; the unique
    (endpoint, message) key keeps a redelivered event from creating anything, even if the
    inbox row were gone."""
    endpoints = [
        e
        for e in await repository.enabled_endpoints(conn, event.tenantid)
        if domain.matches(list(e["event_types"]), event.type)
    ]
    if not endpoints:
        return
    await repository.insert_message(
        conn,
        message_id=event.id,
        tenant_id=event.tenantid,
        event_type=event.type,
        event_time=event.time,
        body=domain.render_body(event.type, event.time, event.data, event.tenantid),
    )
    for endpoint in endpoints:
        await repository.insert_delivery(
            conn,
            delivery_id=new_id("dlv"),
            tenant_id=event.tenantid,
            endpoint_id=endpoint["id"],
            message_id=event.id,
        )


# --- attempts (dispatcher) --------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A delivery claimed for one attempt, with everything the request needs."""

    delivery_id: str
    tenant_id: str
    endpoint_id: str
    message_id: str
    attempt: int
    url: str
    event_type: str
    body: str
    secrets: tuple[str, ...]
    round_start: int = 0
    failing_since: datetime | None = None

    @property
    def attempt_in_round(self) -> int:
        return self.attempt - self.round_start

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Claim:
        return cls(
            delivery_id=row["id"],
            tenant_id=row["tenant_id"],
            endpoint_id=row["endpoint_id"],
            message_id=row["message_id"],
            attempt=row["attempts"],
            url=row["url"],
            event_type=row["event_type"],
            body=row["body"],
            secrets=tuple(row["secrets"]),
            round_start=row["round_start"],
            failing_since=row["failing_since"],
        )


async def claim_due(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    per_endpoint: int,
    in_flight: dict[str, int],
) -> list[Claim]:
    rows = await repository.claim_due(
        conn,
        now=now,
        lease_until=lease_until,
        limit=limit,
        per_endpoint=per_endpoint,
        in_flight=in_flight,
    )
    return [Claim.from_row(r) for r in rows]


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
                status="pending" if d.outcome == "retry" else d.outcome,
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
    common = {
        "delivery_id": claim.delivery_id,
        "endpoint_id": claim.endpoint_id,
        "message_id": claim.message_id,
        "event_type": claim.event_type,
        "attempt": claim.attempt,
    }
    payload: out.DeliverySucceeded | out.DeliveryFailed
    if decision.outcome == "delivered":
        assert result.status_code is not None
        payload = out.DeliverySucceeded(**common, status_code=result.status_code)
    elif decision.outcome == "failed":
        payload = out.DeliveryFailed(
            **common,
            status_code=result.status_code,
            error=f"{decision.reason}; last attempt: {result.describe()}",
            will_retry=False,
        )
    else:
        return
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
        out.EndpointDisabled(
            endpoint_id=claim.endpoint_id,
            reason=reason,
            url=endpoint["url"],
            failing_since=endpoint["failing_since"],
            last_status_code=result.status_code,
            disabled_at=now,
        ),
        claim,
        subject=claim.endpoint_id,
        event_id=f"{claim.endpoint_id}.disabled.{claim.delivery_id}.{claim.attempt}",
        outbox=outbox,
    )

"""All SQL of webhooks: endpoints and their secrets, messages, deliveries and attempts.
Functions take the caller's connection: the edge owns the transaction; nothing here commits.
Times that drive delivery come in as arguments (the dispatcher's injected clock), never from
the database's now()."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from notification_service.db import any_row
from notification_service.webhooks.domain import DeliveryStatus, Outcome, ReplayWindow
from servicekit.pagination import NEWEST, CreatedRange, PageQuery, Where, fetch_page
from servicekit.secretbox import SealedColumn

# --- endpoints --------------------------------------------------------------------------------

# The columns holding secrets, sealed (servicekit.secretbox; the Resealer keeps them under the
# newest SECRETS_KEY).
SEALED = [SealedColumn("webhook_endpoint_secrets", "id", "secret")]


async def insert_endpoint(
    conn: asyncpg.Connection,
    *,
    endpoint_id: str,
    tenant_id: str,
    url: str,
    description: str | None,
    event_types: list[str],
    secret: str,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types)
        VALUES ($1, $2, $3, $4, $5) RETURNING *
        """,
        endpoint_id,
        tenant_id,
        url,
        description,
        event_types,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)",
        endpoint_id,
        secret,
    )
    return row


async def get_endpoint(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id
    )


async def endpoint_page(
    conn: asyncpg.Connection, tenant_id: str, enabled: bool | None, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id).maybe("enabled = {}", enabled)
    return await fetch_page(conn, "SELECT * FROM webhook_endpoints", where, page)


async def enabled_endpoints(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT id, event_types FROM webhook_endpoints
            WHERE tenant_id = $1 AND enabled ORDER BY id
            """,
            tenant_id,
        )
    )


async def disable_endpoint(
    conn: asyncpg.Connection, endpoint_id: str, reason: str, at: datetime
) -> asyncpg.Record | None:
    """The endpoint if this call disabled it; None if it already was (so one event is told)."""
    return await conn.fetchrow(
        """
        UPDATE webhook_endpoints
        SET enabled = false, disabled_reason = $2, disabled_at = $3, updated_at = $3
        WHERE id = $1 AND enabled
        RETURNING *
        """,
        endpoint_id,
        reason,
        at,
    )


async def update_endpoint(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    url: str | None,
    description: str | None,
    clear_description: bool,
    event_types: list[str] | None,
    enabled: bool | None,
) -> asyncpg.Record | None:
    """Only the given fields change. Enabling clears why it was disabled and the failure
    streak: the merchant says the receiver is fixed, and the 5 days count afresh."""
    return await conn.fetchrow(
        """
        UPDATE webhook_endpoints
        SET url = coalesce($3, url),
            description = CASE WHEN $5 THEN NULL ELSE coalesce($4, description) END,
            event_types = coalesce($6, event_types),
            enabled = coalesce($7, enabled),
            disabled_reason = CASE
                WHEN $7 IS TRUE THEN NULL
                WHEN $7 IS FALSE AND enabled THEN 'manual'
                ELSE disabled_reason END,
            disabled_at = CASE
                WHEN $7 IS TRUE THEN NULL
                WHEN $7 IS FALSE AND enabled THEN now()
                ELSE disabled_at END,
            failing_since = CASE WHEN $7 IS TRUE AND NOT enabled THEN NULL
                                 ELSE failing_since END,
            updated_at = now()
        WHERE id = $2 AND tenant_id = $1
        RETURNING *
        """,
        tenant_id,
        endpoint_id,
        url,
        description,
        clear_description,
        event_types,
        enabled,
    )


async def rotate_secret(
    conn: asyncpg.Connection, endpoint_id: str, secret: str, old_expire_at: datetime
) -> None:
    """The new secret signs from now on; the ones it replaces keep signing until
    `old_expire_at` (never longer than they already would)."""
    await conn.execute(
        """
        UPDATE webhook_endpoint_secrets
        SET expires_at = least(coalesce(expires_at, $2), $2)
        WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())
        """,
        endpoint_id,
        old_expire_at,
    )
    await conn.execute(
        "INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES ($1, $2)",
        endpoint_id,
        secret,
    )


async def lock_endpoint(conn: asyncpg.Connection, tenant_id: str, endpoint_id: str) -> bool:
    """Serialises rotations of one endpoint."""
    return await any_row(
        conn,
        "SELECT true FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        endpoint_id,
        tenant_id,
    )


async def mark_endpoint_health(
    conn: asyncpg.Connection, endpoint_id: str, healthy: bool, at: datetime
) -> None:
    """A success clears failing_since; a failure starts it unless it already runs. Written only
    on a change, so a busy endpoint's row is not rewritten by every attempt."""
    if healthy:
        await conn.execute(
            """
            UPDATE webhook_endpoints SET failing_since = NULL
            WHERE id = $1 AND failing_since IS NOT NULL
            """,
            endpoint_id,
        )
    else:
        await conn.execute(
            """
            UPDATE webhook_endpoints SET failing_since = $2
            WHERE id = $1 AND failing_since IS NULL
            """,
            endpoint_id,
            at,
        )


# --- messages and deliveries ------------------------------------------------------------------


async def insert_message(
    conn: asyncpg.Connection,
    *,
    message_id: str,
    tenant_id: str,
    event_type: str,
    event_time: datetime,
    body: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO webhook_messages (id, tenant_id, event_type, event_time, body)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING
        """,
        message_id,
        tenant_id,
        event_type,
        event_time,
        body,
    )


async def insert_delivery(
    conn: asyncpg.Connection,
    *,
    delivery_id: str,
    tenant_id: str,
    endpoint_id: str,
    message_id: str,
    due: datetime | None = None,
) -> bool:
    """Due at `due`, by default at once (the transaction's time). False when this endpoint
    already has the message. Wakes the dispatchers when the transaction commits (see
    `notify_deliveries_due`), in the same round trip."""
    return await any_row(
        conn,
        """
        WITH ins AS (
            INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id,
                                            next_attempt_at)
            VALUES ($1, $2, $3, $4, coalesce($5, now()))
            ON CONFLICT (endpoint_id, message_id) DO NOTHING RETURNING true
        )
        SELECT (SELECT * FROM ins), pg_notify(current_schema() || '_webhooks', '')
        """,
        delivery_id,
        tenant_id,
        endpoint_id,
        message_id,
        due,
    )


def deliveries_channel(schema: str) -> str:
    return f"{schema}_webhooks"


async def notify_deliveries_due(conn: asyncpg.Connection) -> None:
    """Wake the dispatchers (they LISTEN on `deliveries_channel`) when the caller's transaction
    commits: deliveries it made due go out now instead of at the next poll. Notifications of
    one transaction fold into one."""
    await conn.execute("SELECT pg_notify(current_schema() || '_webhooks', '')")


@dataclass(frozen=True)
class ClaimRequest:
    now: datetime
    lease_until: datetime
    limit: int
    per_endpoint: int
    # Requests this process already has out, per endpoint.
    in_flight: Mapping[str, int]


async def claim_due(conn: asyncpg.Connection, req: ClaimRequest) -> list[asyncpg.Record]:
    """Claim up to `limit` due deliveries of enabled endpoints, at most `per_endpoint` in
    flight per endpoint counting `in_flight` (what this process already has out), oldest due
    first. Claiming counts the attempt and moves next_attempt_at to the lease's end, so the
    rows need no lock while the request runs; SKIP LOCKED lets replicas claim side by side
    without waiting.

    Per-endpoint fairness without ranking the backlog: a loose index scan visits each endpoint
    with pending deliveries once (`webhook_deliveries_pending`), each gives at most its free
    slots' worth of its oldest due ones, and only those few candidates are ordered and then
    locked, each by its key. Every step is an index lookup whatever the statistics say about a
    table that has just received a backlog (the old whole-backlog ranking became a quadratic
    nested loop then). A candidate another replica claimed meanwhile fails the recheck of
    status and due time on its newer row version and is skipped."""
    return list(
        await conn.fetch(
            """
            WITH RECURSIVE pending_endpoints (endpoint_id) AS (
                (SELECT endpoint_id FROM webhook_deliveries
                 WHERE status = 'pending' ORDER BY endpoint_id, next_attempt_at LIMIT 1)
                UNION ALL
                SELECT (SELECT d.endpoint_id FROM webhook_deliveries d
                        WHERE d.status = 'pending' AND d.endpoint_id > p.endpoint_id
                        ORDER BY d.endpoint_id, d.next_attempt_at LIMIT 1)
                FROM pending_endpoints p
                WHERE p.endpoint_id IS NOT NULL
            ),
            busy AS (
                SELECT * FROM unnest($4::text[], $5::int[]) AS b (endpoint_id, in_flight)
            ),
            candidates AS (
                SELECT c.id
                FROM pending_endpoints p
                JOIN webhook_endpoints e ON e.id = p.endpoint_id AND e.enabled
                LEFT JOIN busy b ON b.endpoint_id = p.endpoint_id
                CROSS JOIN LATERAL (
                    SELECT d.id, d.next_attempt_at
                    FROM webhook_deliveries d
                    WHERE d.endpoint_id = p.endpoint_id AND d.status = 'pending'
                      AND d.next_attempt_at <= $1
                    ORDER BY d.next_attempt_at, d.id
                    LIMIT greatest($6 - coalesce(b.in_flight, 0), 0)
                ) c
                ORDER BY c.next_attempt_at, c.id
                LIMIT $3
            ),
            picked AS (
                SELECT l.id
                FROM candidates c
                CROSS JOIN LATERAL (
                    SELECT d.id FROM webhook_deliveries d
                    WHERE d.id = c.id AND d.status = 'pending' AND d.next_attempt_at <= $1
                    FOR UPDATE SKIP LOCKED
                ) l
            )
            UPDATE webhook_deliveries d
            SET attempts = d.attempts + 1, next_attempt_at = $2, updated_at = $1
            FROM webhook_endpoints e, webhook_messages m
            WHERE d.id = ANY (ARRAY(SELECT id FROM picked))
              AND e.id = d.endpoint_id AND m.id = d.message_id
            RETURNING d.id, d.tenant_id, d.endpoint_id, d.message_id, d.attempts,
                      d.round_start, e.url, e.failing_since, m.event_type, m.body,
                      array(SELECT s.secret FROM webhook_endpoint_secrets s
                            WHERE s.endpoint_id = d.endpoint_id
                              AND (s.expires_at IS NULL OR s.expires_at > $1)
                            ORDER BY s.id DESC) AS secrets
            """,
            req.now,
            req.lease_until,
            req.limit,
            list(req.in_flight.keys()),
            list(req.in_flight.values()),
            req.per_endpoint,
        )
    )


@dataclass(frozen=True)
class AttemptRow:
    """One attempt's log row and what it does to its delivery."""

    delivery_id: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None
    outcome: Outcome
    # The delivery's new status and next attempt (pending + a time when it is retried).
    status: DeliveryStatus
    next_attempt_at: datetime | None
    last_error: str | None


async def record_attempts(
    conn: asyncpg.Connection, rows: Sequence[AttemptRow], at: datetime
) -> set[tuple[str, int]]:
    """Log the attempts and apply their results to their deliveries, all in one statement:
    the dispatcher's throughput depends on it (a round trip per attempt cost more than the
    rows). Every attempt is logged; a delivery changes only while its claim is still that
    attempt's. Returns the (delivery, attempt) pairs that did; the others' leases ran out and
    a newer claim took over, so the newer attempt decides."""
    if not rows:
        return set()
    updated = await conn.fetch(
        """
        WITH input AS (
            SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[],
                                 $5::int[], $6::text[], $7::text[], $8::text[], $9::text[],
                                 $10::timestamptz[], $11::text[])
                AS i (delivery_id, attempt, attempted_at, status_code, latency_ms,
                      response_body, error, outcome, status, next_attempt_at, last_error)
        ),
        logged AS (
            INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code,
                                          latency_ms, response_body, error, outcome)
            SELECT delivery_id, attempt, attempted_at, status_code, latency_ms,
                   response_body, error, outcome
            FROM input
            ON CONFLICT (delivery_id, attempt) DO NOTHING
        )
        UPDATE webhook_deliveries d
        SET status = i.status,
            next_attempt_at = i.next_attempt_at,
            last_status_code = i.status_code,
            last_error = i.last_error,
            delivered_at = CASE WHEN i.status = 'delivered' THEN $12 ELSE d.delivered_at END,
            failed_at = CASE WHEN i.status = 'failed' THEN $12 ELSE d.failed_at END,
            updated_at = $12
        FROM input i
        WHERE d.id = ANY ($1::text[]) AND d.id = i.delivery_id
          AND d.attempts = i.attempt AND d.status = 'pending'
        RETURNING d.id, d.attempts
        """,
        [r.delivery_id for r in rows],
        [r.attempt for r in rows],
        [r.attempted_at for r in rows],
        [r.status_code for r in rows],
        [r.latency_ms for r in rows],
        [r.response_body for r in rows],
        [r.error for r in rows],
        [r.outcome for r in rows],
        [r.status for r in rows],
        [r.next_attempt_at for r in rows],
        [r.last_error for r in rows],
        at,
    )
    return {(r["id"], r["attempts"]) for r in updated}


async def get_delivery(conn: asyncpg.Connection, delivery_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)


async def message_event_type(conn: asyncpg.Connection, message_id: str) -> str:
    return str(
        await conn.fetchval("SELECT event_type FROM webhook_messages WHERE id = $1", message_id)
    )


async def resend_delivery(
    conn: asyncpg.Connection, endpoint_id: str, delivery_id: str, now: datetime
) -> asyncpg.Record | None:
    """A settled delivery goes out again now, with a fresh round of the retry schedule. None
    when it is not this endpoint's or is still pending (it is going out anyway)."""
    return await conn.fetchrow(
        """
        UPDATE webhook_deliveries
        SET status = 'pending', round_start = attempts, next_attempt_at = $3,
            delivered_at = NULL, failed_at = NULL, updated_at = $3
        WHERE id = $2 AND endpoint_id = $1 AND status <> 'pending'
          AND EXISTS (SELECT 1 FROM webhook_messages m
                      WHERE m.id = webhook_deliveries.message_id AND m.body IS NOT NULL)
        RETURNING *
        """,
        endpoint_id,
        delivery_id,
        now,
    )


async def replay_failed(
    conn: asyncpg.Connection, endpoint_id: str, window: ReplayWindow, *, now: datetime, limit: int
) -> int:
    """Every delivery of the endpoint that failed in the window goes out again, oldest
    message first."""
    count = await conn.fetchval(
        """
        WITH picked AS (
            SELECT id FROM webhook_deliveries
            WHERE endpoint_id = $1 AND status = 'failed' AND failed_at >= $2
              AND ($3::timestamptz IS NULL OR failed_at < $3)
              AND EXISTS (SELECT 1 FROM webhook_messages m
                          WHERE m.id = message_id AND m.body IS NOT NULL)
            ORDER BY created_at, id
            LIMIT $5
            FOR UPDATE
        ), updated AS (
            UPDATE webhook_deliveries d
            SET status = 'pending', round_start = d.attempts, next_attempt_at = $4,
                failed_at = NULL, updated_at = $4
            FROM picked WHERE d.id = picked.id
            RETURNING 1
        )
        SELECT count(*) FROM updated
        """,
        endpoint_id,
        window.since,
        window.until,
        now,
        limit,
    )
    return int(count or 0)


# --- the delivery log -------------------------------------------------------------------------


async def delivery_page(
    conn: asyncpg.Connection,
    endpoint_id: str,
    status: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    """Newest first."""
    where = Where().add("d.endpoint_id = {}", endpoint_id).maybe("d.status = {}", status)
    created.apply(where, "d.created_at")
    select = """
        SELECT d.*, m.event_type
        FROM webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id
    """
    return await fetch_page(conn, select, where, page, NEWEST, alias="d")


async def attempts_of(conn: asyncpg.Connection, delivery_ids: list[str]) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """
            SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[])
            ORDER BY delivery_id, attempt
            """,
            delivery_ids,
        )
    )


# --- retention ----------------------------------------------------------------------------------


async def clear_old_bodies(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Clears the bodies of at most `limit` messages created before `before` whose deliveries
    are all settled, and the response bodies their attempts logged (rows another replica holds
    are skipped). The rows stay: the delivery log, and the (endpoint, message) key that keeps a
    redelivered event from posting twice. Returns how many messages."""
    count = await conn.fetchval(
        """
        WITH old AS (
            SELECT m.id FROM webhook_messages m
            WHERE m.created_at < $1 AND m.body IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                              WHERE d.message_id = m.id AND d.status = 'pending')
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ), attempts AS (
            UPDATE webhook_attempts a SET response_body = NULL
            FROM webhook_deliveries d JOIN old ON d.message_id = old.id
            WHERE a.delivery_id = d.id AND a.response_body IS NOT NULL
        ), cleared AS (
            UPDATE webhook_messages m SET body = NULL FROM old WHERE m.id = old.id RETURNING 1
        )
        SELECT count(*) FROM cleared
        """,
        before,
        limit,
    )
    return int(count)

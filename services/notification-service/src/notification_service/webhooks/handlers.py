"""Use cases of webhooks: the API's (endpoints, resend, replay, the test event, the delivery
log) and the fan-out of a consumed event to the endpoints that want it. Every function takes
the caller's connection (the edge's transaction); the dispatcher's transactions are in
`attempts`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from notification_service.webhooks import domain, repository
from notification_service.webhooks.schemas import EndpointIn, EndpointPatch, ReplayIn
from referral_events import CloudEvent
from servicekit.ids import new_id
from servicekit.pagination import CreatedRange, PageQuery
from servicekit.problems import Conflict, NotFound
from servicekit.secretbox import SecretBox

# --- endpoints and deliveries ---------------------------------------------------------------------


async def create_endpoint(
    conn: asyncpg.Connection, tenant_id: str, cmd: EndpointIn, vetted_url: str, sealer: SecretBox
) -> tuple[asyncpg.Record, str]:
    """Returns the endpoint and its secret (stored sealed). `vetted_url` has passed the SSRF
    guard, which the route runs before opening the transaction (it may wait on DNS)."""
    event_types = domain.endpoint_filter(cmd.event_types)
    secret = domain.new_secret()
    description = cmd.description.strip() if cmd.description else None
    row = await repository.insert_endpoint(
        conn,
        endpoint_id=new_id("ep"),
        tenant_id=tenant_id,
        url=vetted_url,
        description=description or None,
        event_types=event_types,
        secret=sealer.seal(secret),
    )
    return row, secret


async def get_endpoint(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str
) -> asyncpg.Record:
    endpoint = await repository.get_endpoint(conn, tenant_id, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="/endpoint_id")
    return endpoint


async def endpoint_page(
    conn: asyncpg.Connection, tenant_id: str, enabled: bool | None, page: PageQuery
) -> list[asyncpg.Record]:
    return await repository.endpoint_page(conn, tenant_id, enabled, page)


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
            domain.endpoint_filter(cmd.event_types)
            if "event_types" in fields and cmd.event_types is not None
            else None
        ),
        enabled=cmd.enabled if "enabled" in fields else None,
    )
    if row is None:
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="/endpoint_id")
    return row


async def rotate_secret(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    *,
    now: datetime,
    overlap: timedelta,
    sealer: SecretBox,
) -> tuple[str, datetime]:
    """A new secret (stored sealed), and until when the previous one(s) still sign next to
    it."""
    if not await repository.lock_endpoint(conn, tenant_id, endpoint_id):
        raise NotFound(f"no webhook endpoint '{endpoint_id}'", field="/endpoint_id")
    secret = domain.new_secret()
    expires = domain.rotation_expiry(now, overlap)
    await repository.rotate_secret(conn, endpoint_id, sealer.seal(secret), expires)
    return secret, expires


async def resend(
    conn: asyncpg.Connection, tenant_id: str, endpoint_id: str, delivery_id: str, now: datetime
) -> dict[str, Any]:
    endpoint = await get_endpoint(conn, tenant_id, endpoint_id)
    row = await repository.resend_delivery(conn, endpoint_id, delivery_id, now)
    if row is None:
        existing = await repository.get_delivery(conn, delivery_id)
        if existing is None or existing["endpoint_id"] != endpoint_id:
            raise NotFound(f"no delivery '{delivery_id}' on this endpoint", field="/delivery_id")
        if existing["status"] != "pending":
            raise Conflict(
                "the message's body is past its retention (WEBHOOK_BODY_RETENTION_DAYS): it "
                "cannot be sent again",
                field="/delivery_id",
            )
        raise Conflict("the delivery is still pending: it is being sent", field="/delivery_id")
    _require_enabled(endpoint)
    await repository.notify_deliveries_due(conn)
    return await _with_event_type(conn, row)


async def replay_failed(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    cmd: ReplayIn,
    *,
    now: datetime,
    limit: int,
) -> int:
    endpoint = await get_endpoint(conn, tenant_id, endpoint_id)
    _require_enabled(endpoint)
    window = domain.replay_window(cmd.since, cmd.until)
    replayed = await repository.replay_failed(conn, endpoint_id, window, now=now, limit=limit)
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
            "the endpoint is disabled; enable it first (PATCH enabled: true)", field="/endpoint_id"
        )


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[asyncpg.Record]
    attempts: dict[str, list[asyncpg.Record]]


async def delivery_log(
    conn: asyncpg.Connection,
    tenant_id: str,
    endpoint_id: str,
    status: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> DeliveryPage:
    """One page of the endpoint's deliveries, newest first, each with its attempts."""
    await get_endpoint(conn, tenant_id, endpoint_id)
    rows = await repository.delivery_page(conn, endpoint_id, status, created, page)
    attempts: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for attempt in await repository.attempts_of(conn, [r["id"] for r in rows]):
        attempts[attempt["delivery_id"]].append(attempt)
    return DeliveryPage(rows, dict(attempts))


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

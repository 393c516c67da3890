"""Refunds of conversions and ends of subscriptions: recorded idempotently, and published when
they concern a referred friend (rewards hang on those), so rewards are clawed back or stop."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from attribution_service.conversions import repository as conversions
from attribution_service.conversions.events import conversion_refunded
from attribution_service.conversions.handlers import request_hash
from attribution_service.events import EVENTS
from attribution_service.refunds import repository
from attribution_service.refunds.domain import new_refund
from attribution_service.refunds.schemas import CancellationIn, RefundIn
from referral_events.contracts import attribution as out
from referral_events.outbox import enqueue_rows
from servicekit.problems import Conflict, InvalidInput, NotFound


async def refund(
    conn: asyncpg.Connection,
    tenant_id: str,
    conversion_id: str,
    cmd: RefundIn,
    idempotency_key: str | None,
    *,
    conv: asyncpg.Record | None = None,
) -> tuple[asyncpg.Record, bool]:
    """Record one refund (full when no amount is given: the rest). Idempotent on the merchant's
    refund id or the Idempotency-Key; published only for attributed conversions, which are the
    only ones a reward can hang on."""
    external = cmd.refund_id or (f"key:{idempotency_key}" if idempotency_key else None)
    if external is None:
        raise InvalidInput("send refund_id or an Idempotency-Key header", field="/refund_id")
    conv = conv or await conversions.get_conversion(conn, tenant_id, conversion_id, lock=True)
    if conv is None:
        raise NotFound(f"no conversion '{conversion_id}'", field="/conversion_id")
    digest = request_hash(cmd)
    existing = await repository.get_refund(conn, tenant_id, conv["id"], external)
    if existing is not None:
        if existing["request_hash"] != digest:
            raise Conflict(
                "this refund id was used with a different request body", field="/refund_id"
            )
        return existing, False
    new = new_refund(conv, cmd, external_id=external, request_hash=digest, now=datetime.now(UTC))
    row = await repository.insert_refund(conn, new)
    if conv["status"] == "attributed":
        # A conversion still waiting (review, pending evidence) publishes its refunds when it
        # is attributed (conversions.handlers.record), so the reward follows the net amount.
        row_out = conversion_refunded(conv, row)
        await enqueue_rows(conn, [row_out])
    return row, True


async def cancel_subscription(
    conn: asyncpg.Connection, tenant_id: str, subscription_id: str, cmd: CancellationIn
) -> tuple[asyncpg.Record, asyncpg.Record | None, bool]:
    """Record the end of a subscription (idempotent); published when a referred friend's
    subscription it is, so recurring rewards stop."""
    row = await repository.insert_cancellation(
        conn, tenant_id, subscription_id, cmd.customer_id, cmd.cancelled_at or datetime.now(UTC)
    )
    created = row is not None
    if row is None:
        row = await repository.get_cancellation(conn, tenant_id, subscription_id)
        assert row is not None
    latest = await repository.latest_subscription_conversion(conn, tenant_id, subscription_id)
    if created and latest is not None:
        await EVENTS.emit(
            conn,
            tenant_id=tenant_id,
            payload=out.SubscriptionCancelled(
                subscription_id=subscription_id,
                program_id=latest["program_id"],
                advocate_id=latest["advocate_id"],
                friend_customer_id=latest["customer_id"],
                cancelled_at=row["cancelled_at"],
                conversion_id=latest["id"],
            ),
            key=latest["advocate_id"],
            event_id=f"{tenant_id}:{subscription_id}:cancelled",
        )
    return row, latest, created

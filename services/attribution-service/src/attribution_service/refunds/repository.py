"""Refunds and subscription cancellations' SQL. Functions take the caller's connection; nothing
commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from attribution_service.refunds.domain import NewRefund
from servicekit.pagination import PageQuery, Where, fetch_page
from servicekit.sql import Params


async def get_refund(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str, external_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM refunds WHERE tenant_id = $1 AND conversion_id = $2 AND external_id = $3",
        tenant_id,
        conversion_id,
        external_id,
    )


_REFUND = Params.of(NewRefund)
_INSERT_REFUND = """
    INSERT INTO refunds ({names}) VALUES ({values}) RETURNING *
""".format(names=", ".join(_REFUND.names), values=_REFUND.placeholders())  # noqa: S608


async def insert_refund(conn: asyncpg.Connection, refund: NewRefund) -> asyncpg.Record:
    """The refund, and the conversion's refunded total raised by it."""
    row = await conn.fetchrow(_INSERT_REFUND, *_REFUND.values(refund))
    assert row is not None
    await conn.execute(
        "UPDATE conversions SET refunded_minor = refunded_minor + $2 WHERE id = $1",
        refund.conversion_id,
        refund.amount_minor,
    )
    return row


async def list_refunds(conn: asyncpg.Connection, conversion_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM refunds WHERE conversion_id = $1 ORDER BY created_at", conversion_id
    )
    return rows


async def conversion_by_any_order(
    conn: asyncpg.Connection, tenant_id: str, order_ids: list[str]
) -> asyncpg.Record | None:
    """The paid conversion (purchase or subscription payment) of one of these order ids."""
    return await conn.fetchrow(
        """
        SELECT * FROM conversions WHERE tenant_id = $1 AND order_id = ANY($2::text[])
          AND amount_minor IS NOT NULL ORDER BY created_at LIMIT 1 FOR UPDATE
        """,
        tenant_id,
        order_ids,
    )


async def insert_cancellation(
    conn: asyncpg.Connection,
    tenant_id: str,
    subscription_id: str,
    customer_id: str | None,
    cancelled_at: datetime,
) -> asyncpg.Record | None:
    """None when the subscription was already cancelled."""
    return await conn.fetchrow(
        """
        INSERT INTO subscription_cancellations (tenant_id, subscription_id, customer_id,
                                                cancelled_at)
        VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING *
        """,
        tenant_id,
        subscription_id,
        customer_id,
        cancelled_at,
    )


async def get_cancellation(
    conn: asyncpg.Connection, tenant_id: str, subscription_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM subscription_cancellations WHERE tenant_id = $1 AND subscription_id = $2",
        tenant_id,
        subscription_id,
    )


async def latest_subscription_conversion(
    conn: asyncpg.Connection, tenant_id: str, subscription_id: str
) -> asyncpg.Record | None:
    """The subscription's latest attributed payment: who it belongs to."""
    return await conn.fetchrow(
        """
        SELECT * FROM conversions WHERE tenant_id = $1 AND subscription_id = $2
          AND status = 'attributed' ORDER BY occurred_at DESC LIMIT 1
        """,
        tenant_id,
        subscription_id,
    )


async def refund_page(
    conn: asyncpg.Connection, conversion_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    where = Where().add("conversion_id = {}", conversion_id)
    return await fetch_page(conn, "SELECT * FROM refunds", where, page)

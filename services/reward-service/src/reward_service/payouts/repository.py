"""SQL of redemptions and payout batches. Functions take the caller's connection: the edge owns
the transaction; nothing here commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from reward_service.holders import HolderType
from reward_service.payouts import domain
from servicekit.pagination import CreatedRange, PageQuery, Where, fetch_page
from servicekit.sql import Params, record_as

# --- redemptions --------------------------------------------------------------------------------

_REDEMPTION = Params.typed(
    "id",
    "tenant_id",
    "holder_type",
    "holder_id",
    "idempotency_key",
    "request_hash",
    "amount",
    "unit",
    "reference",
    "created_at",
)
_CLAIM = _REDEMPTION.insert(
    "redemptions",
    "ON CONFLICT (tenant_id, holder_id, idempotency_key) DO NOTHING RETURNING *, true AS created",
)


async def claim_redemption(
    conn: asyncpg.Connection,
    redemption_id: str,
    request: domain.RedemptionRequest,
    holder_type: HolderType,
    at: datetime,
) -> domain.Redemption:
    """Inserts the redemption, or returns the one already made with this key (waiting for a
    concurrent request with the same key to commit or roll back first). `created` tells which."""
    row = await conn.fetchrow(
        _CLAIM,
        *_REDEMPTION.values(request, id=redemption_id, holder_type=holder_type, created_at=at),
    )
    if row is None:
        row = await conn.fetchrow(
            """
            SELECT *, false AS created FROM redemptions
            WHERE tenant_id = $1 AND holder_id = $2 AND idempotency_key = $3
            """,
            request.tenant_id,
            request.holder_id,
            request.idempotency_key,
        )
        assert row is not None
    return record_as(domain.Redemption, row)


# --- payouts ------------------------------------------------------------------------------------


async def lock_cash_balances_over(
    conn: asyncpg.Connection, tenant_id: str, unit: str, threshold: int
) -> list[tuple[HolderType, str, int]]:
    """(holder type, holder id, balance) of the holders whose available cash in `unit` is at
    least `threshold`, their balance rows locked."""
    rows = await conn.fetch(
        """
        SELECT a.holder_type, a.holder_id, b.balance
        FROM accounts a JOIN balances b ON b.account_id = a.id
        WHERE a.tenant_id = $1 AND a.unit = $2 AND a.purse = 'cash' AND a.kind = 'available'
          AND a.holder_type <> 'program' AND b.balance >= $3
        ORDER BY a.id
        FOR UPDATE OF b
        """,
        tenant_id,
        unit,
        threshold,
    )
    return [(r["holder_type"], r["holder_id"], r["balance"]) for r in rows]


async def insert_payout_batch(
    conn: asyncpg.Connection, tenant_id: str, batch: domain.PayoutBatch
) -> None:
    await conn.execute(
        """
        INSERT INTO payout_batches (id, tenant_id, unit, threshold, created_at)
        VALUES ($1, $2, $3, $4, $5)
        """,
        batch.id,
        tenant_id,
        batch.unit,
        batch.threshold,
        batch.created_at,
    )
    await conn.executemany(
        """
        INSERT INTO payout_lines (id, batch_id, tenant_id, holder_type, holder_id, amount, unit,
                                  status, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        [
            (
                line.id,
                batch.id,
                tenant_id,
                line.holder_type,
                line.holder_id,
                line.amount,
                line.unit,
                line.status,
                batch.created_at,
            )
            for line in batch.lines
        ],
    )


async def payout_batch(
    conn: asyncpg.Connection, tenant_id: str, batch_id: str
) -> domain.PayoutBatch | None:
    batch = await conn.fetchrow(
        "SELECT * FROM payout_batches WHERE id = $1 AND tenant_id = $2", batch_id, tenant_id
    )
    if batch is None:
        return None
    lines = await conn.fetch("SELECT * FROM payout_lines WHERE batch_id = $1 ORDER BY id", batch_id)
    return record_as(
        domain.PayoutBatch, batch, lines=[record_as(domain.PayoutLine, r) for r in lines]
    )


async def redemption_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    holder_id: str | None,
    unit: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    where = Where().add("tenant_id = {}", tenant_id)
    where.maybe("holder_id = {}", holder_id).maybe("unit = {}", unit)
    created.apply(where)
    return await fetch_page(conn, "SELECT * FROM redemptions", where, page)


async def payout_batch_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    unit: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    """One page of batches, each with its count of lines and their total by status."""
    where = Where().add("b.tenant_id = {}", tenant_id).maybe("b.unit = {}", unit)
    created.apply(where, "b.created_at")
    select = """
        SELECT b.*, n.lines, n.total, n.pending, n.paid, n.failed
        FROM payout_batches b, LATERAL (
            SELECT count(*) AS lines, coalesce(sum(l.amount), 0) AS total,
                   count(*) FILTER (WHERE l.status = 'pending') AS pending,
                   count(*) FILTER (WHERE l.status = 'paid') AS paid,
                   count(*) FILTER (WHERE l.status = 'failed') AS failed
            FROM payout_lines l WHERE l.batch_id = b.id
        ) n
    """
    return await fetch_page(conn, select, where, page, alias="b")


async def lock_payout_line(
    conn: asyncpg.Connection, tenant_id: str, batch_id: str, line_id: str
) -> domain.PayoutLine | None:
    row = await conn.fetchrow(
        """
        SELECT * FROM payout_lines WHERE id = $1 AND batch_id = $2 AND tenant_id = $3
        FOR UPDATE
        """,
        line_id,
        batch_id,
        tenant_id,
    )
    return None if row is None else record_as(domain.PayoutLine, row)


async def settle_payout_line(
    conn: asyncpg.Connection, line: domain.PayoutLine, at: datetime
) -> None:
    """Records a pending line's outcome (`line` as marked: paid or failed)."""
    await conn.execute(
        """
        UPDATE payout_lines SET status = $2, reference = $3, reason = $4, updated_at = $5
        WHERE id = $1 AND status = 'pending'
        """,
        line.id,
        line.status,
        line.reference,
        line.reason,
        at,
    )

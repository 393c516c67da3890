"""Use cases that spend available balances: redemptions (credit) and payout batches (cash).
They take the edge's connection and never commit.

Spending always locks the account's balance row first (ledger lock_balance / the payout query's
FOR UPDATE), so concurrent spends of one balance queue behind each other and each sees what the
previous one left: none can overdraw."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from referral_events.outbox import enqueue_rows
from reward_service.ledger import domain as ledger
from reward_service.ledger import repository as ledger_repository
from reward_service.payouts import domain, events, repository
from reward_service.payouts.domain import LineStatus
from reward_service.programs import handlers as programs
from reward_service.units import format_minor
from servicekit.ids import new_id
from servicekit.pagination import CreatedRange, PageQuery
from servicekit.problems import Conflict, InvalidInput, NotFound

# --- redemptions --------------------------------------------------------------------------------


async def redeem(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    holder_id: str,
    idempotency_key: str,
    amount: int,
    unit: str,
    reference: str | None,
    now: datetime,
) -> domain.Redemption:
    """Spends `amount` of the holder's available credit. The same Idempotency-Key returns the
    first answer; a different body under it is refused. Insufficient balance raises Conflict and,
    since the edge then rolls back, posts nothing."""
    request = domain.RedemptionRequest(
        tenant_id, holder_id, idempotency_key, amount, unit, reference
    )
    known = await ledger_repository.holder_type_of(conn, tenant_id, holder_id)
    if known is None:
        await programs.require_holder(conn, tenant_id, holder_id)
    # A holder with no account yet is taken for an advocate; it has nothing to spend anyway.
    holder_type = known or "advocate"
    redemption = await repository.claim_redemption(conn, new_id("rdm"), request, holder_type, now)
    if not redemption.created:
        if redemption.request_hash != request.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was used for a different redemption",
                field="/Idempotency-Key",
            )
        return redemption
    account = ledger.holder_ref(tenant_id, holder_type, holder_id, "available", unit)
    balance = await ledger_repository.lock_balance(conn, account) if known else 0
    if balance < amount:
        raise Conflict(
            f"insufficient available balance: {format_minor(max(balance, 0), unit)} {unit}"
            f" available, {format_minor(amount, unit)} requested",
            field="/amount_minor",
        )
    redeemed = ledger.holder_ref(tenant_id, holder_type, holder_id, "redeemed", unit)
    await ledger_repository.post_transfers(
        conn,
        [ledger.simple_transfer(tenant_id, redemption.id, "redeem", account, redeemed, amount)],
    )
    await enqueue_rows(conn, [events.reward_redeemed(tenant_id, redemption, holder_type, now)])
    return redemption


# --- payouts ------------------------------------------------------------------------------------


async def create_payout_batch(
    conn: asyncpg.Connection, tenant_id: str, unit: str, threshold: int, now: datetime
) -> domain.PayoutBatch:
    """Every holder with at least `threshold` of available cash in `unit` gets a line for their
    whole available cash, which moves to in_payout until the line is marked paid or failed."""
    holders = await repository.lock_cash_balances_over(conn, tenant_id, unit, threshold)
    if not holders:
        raise Conflict(
            f"no holder has {format_minor(threshold, unit)} {unit} of available cash",
            field="/threshold_minor",
        )
    lines = [
        domain.PayoutLine(new_id("pol"), holder_type, holder_id, balance, unit, "pending")
        for holder_type, holder_id, balance in holders
    ]
    batch = domain.PayoutBatch(new_id("pob"), unit, threshold, now, lines)
    await repository.insert_payout_batch(conn, tenant_id, batch)
    await ledger_repository.post_transfers(
        conn,
        [
            ledger.simple_transfer(
                tenant_id,
                line.id,
                "payout",
                line.account(tenant_id, "available"),
                line.account(tenant_id, "in_payout"),
                line.amount,
            )
            for line in lines
        ],
    )
    await enqueue_rows(conn, [events.payout_created(tenant_id, batch.id, line) for line in lines])
    return batch


async def get_payout_batch(
    conn: asyncpg.Connection, tenant_id: str, batch_id: str
) -> domain.PayoutBatch:
    batch = await repository.payout_batch(conn, tenant_id, batch_id)
    if batch is None:
        raise NotFound(f"payout batch '{batch_id}' does not exist", field="/batch_id")
    return batch


async def redemption_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    holder_id: str | None,
    unit: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    return await repository.redemption_page(conn, tenant_id, holder_id, unit, created, page)


async def holder_redemption_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    holder_id: str,
    unit: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    """One holder's redemptions; 404 for a holder neither heard of nor holding an account."""
    rows = await repository.redemption_page(conn, tenant_id, holder_id, unit, created, page)
    if not rows:
        await programs.require_holder(conn, tenant_id, holder_id)
    return rows


async def payout_batch_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    unit: str | None,
    created: CreatedRange,
    page: PageQuery,
) -> list[asyncpg.Record]:
    return await repository.payout_batch_page(conn, tenant_id, unit, created, page)


async def settle_payout_line(
    conn: asyncpg.Connection,
    tenant_id: str,
    batch_id: str,
    line_id: str,
    status: LineStatus,
    reference: str | None,
    reason: str | None,
    now: datetime,
) -> domain.PayoutLine:
    """Marks a pending line paid (in_payout -> paid_out) or failed (in_payout -> available).
    Marking it again the same way answers the same; the other way is a conflict."""
    line = await repository.lock_payout_line(conn, tenant_id, batch_id, line_id)
    if line is None:
        raise NotFound(f"payout line '{line_id}' is not in batch '{batch_id}'", field="/line_id")
    if line.status != "pending":
        if line.status == status:
            return line
        raise Conflict(f"payout line '{line_id}' is already {line.status}", field="/status")
    settled = replace(line, status=status, reference=reference, reason=reason)
    paid = status == "paid"
    await ledger_repository.post_transfers(
        conn,
        [
            ledger.simple_transfer(
                tenant_id,
                line.id,
                "payout_paid" if paid else "payout_failed",
                line.account(tenant_id, "in_payout"),
                line.account(tenant_id, "paid_out" if paid else "available"),
                line.amount,
            )
        ],
    )
    await repository.settle_payout_line(conn, settled, now)
    await enqueue_rows(conn, [events.payout_settled(tenant_id, batch_id, settled, now)])
    return settled

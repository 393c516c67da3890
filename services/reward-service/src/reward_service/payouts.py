"""Use cases that spend available balances: redemptions (credit) and payout batches (cash).
Like handlers.py, they take the edge's connection and never commit.

Spending always locks the account's balance row first (repository.lock_balance / the payout
query's FOR UPDATE), so concurrent spends of one balance queue behind each other and each sees
what the previous one left: none can overdraw."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from referral_events.contracts import reward as ev
from reward_service import domain, ledger, repository
from reward_service.events import EVENTS
from servicekit.ids import new_id
from servicekit.problems import Conflict, InvalidInput, NotFound


def _role(holder_type: str) -> domain.Role:
    return "advocate" if holder_type == "advocate" else "friend"


# --- redemptions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redemption:
    id: str
    holder_id: str
    amount: int
    unit: str
    reference: str | None
    created_at: datetime
    created: bool


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
) -> Redemption:
    """Spends `amount` of the holder's available credit. The same Idempotency-Key returns the
    first answer; a different body under it is refused. Insufficient balance raises Conflict and,
    since the edge then rolls back, posts nothing."""
    request_hash = hashlib.sha256(f"{amount}\x1f{unit}\x1f{reference or ''}".encode()).hexdigest()
    holder_type = await repository.holder_type_of(conn, tenant_id, holder_id)
    row = await repository.claim_redemption(
        conn,
        redemption_id=new_id("rdm"),
        tenant_id=tenant_id,
        holder_type=holder_type or "advocate",
        holder_id=holder_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        amount=amount,
        unit=unit,
        reference=reference,
        at=now,
    )
    redemption = Redemption(
        id=row["id"],
        holder_id=holder_id,
        amount=row["amount"],
        unit=row["unit"],
        reference=row["reference"],
        created_at=row["created_at"],
        created=row["created"],
    )
    if not redemption.created:
        if row["request_hash"] != request_hash:
            raise InvalidInput(
                "this Idempotency-Key was used for a different redemption",
                field="Idempotency-Key",
            )
        return redemption
    account = ledger.holder_ref(tenant_id, holder_type or "advocate", holder_id, "available", unit)
    balance = await repository.lock_balance(conn, account) if holder_type else 0
    if balance < amount:
        raise Conflict(
            f"insufficient available balance: {domain.format_minor(max(balance, 0), unit)} {unit}"
            f" available, {domain.format_minor(amount, unit)} requested",
            field="amount_minor",
        )
    assert holder_type is not None
    redeemed = ledger.holder_ref(tenant_id, holder_type, holder_id, "redeemed", unit)
    await repository.post_transfers(
        conn,
        [ledger.simple_transfer(tenant_id, redemption.id, "redeem", account, redeemed, amount)],
    )
    await EVENTS.emit(
        conn,
        ev.RewardRedeemed(
            redemption_id=redemption.id,
            holder_id=holder_id,
            role=_role(holder_type),
            amount=amount,
            unit=unit,
            advocate_id=holder_id if holder_type == "advocate" else None,
            reference=reference,
            redeemed_at=now,
        ),
        tenant_id=tenant_id,
        key=holder_id,
        event_id=domain.event_id("reward.redeemed", tenant_id, redemption.id),
    )
    return redemption


# --- payouts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayoutLine:
    id: str
    holder_type: str
    holder_id: str
    amount: int
    unit: str
    status: str
    reference: str | None
    reason: str | None


@dataclass(frozen=True)
class PayoutBatch:
    id: str
    unit: str
    threshold: int
    created_at: datetime
    lines: list[PayoutLine]


def _line(row: asyncpg.Record) -> PayoutLine:
    return PayoutLine(
        id=row["id"],
        holder_type=row["holder_type"],
        holder_id=row["holder_id"],
        amount=row["amount"],
        unit=row["unit"],
        status=row["status"],
        reference=row["reference"],
        reason=row["reason"],
    )


def _payout_fields(batch_id: str, line: PayoutLine) -> dict[str, object]:
    return dict(
        payout_id=line.id,
        batch_id=batch_id,
        advocate_id=line.holder_id if line.holder_type == "advocate" else "",
        holder_id=line.holder_id,
        role=_role(line.holder_type),
        amount=line.amount,
        unit=line.unit,
    )


def _accounts(
    tenant_id: str, line: PayoutLine
) -> tuple[ledger.AccountRef, ledger.AccountRef, ledger.AccountRef]:
    def ref(kind: ledger.AccountKind) -> ledger.AccountRef:
        holder_type: domain.HolderType = (
            "advocate" if line.holder_type == "advocate" else "customer"
        )
        return ledger.holder_ref(tenant_id, holder_type, line.holder_id, kind, line.unit, "cash")

    return ref("available"), ref("in_payout"), ref("paid_out")


async def create_payout_batch(
    conn: asyncpg.Connection, tenant_id: str, unit: str, threshold: int, now: datetime
) -> PayoutBatch:
    """Every holder with at least `threshold` of available cash in `unit` gets a line for their
    whole available cash, which moves to in_payout until the line is marked paid or failed."""
    rows = await repository.lock_cash_balances_over(conn, tenant_id, unit, threshold)
    if not rows:
        raise Conflict(
            f"no holder has {domain.format_minor(threshold, unit)} {unit} of available cash",
            field="threshold_minor",
        )
    batch_id = new_id("pob")
    lines = [
        PayoutLine(
            new_id("pol"),
            r["holder_type"],
            r["holder_id"],
            r["balance"],
            unit,
            "pending",
            None,
            None,
        )
        for r in rows
    ]
    await repository.insert_payout_batch(
        conn,
        batch_id,
        tenant_id,
        unit,
        threshold,
        now,
        [(line.id, line.holder_type, line.holder_id, line.amount) for line in lines],
    )
    transfers = []
    for line in lines:
        available, in_payout, _ = _accounts(tenant_id, line)
        transfers.append(
            ledger.simple_transfer(tenant_id, line.id, "payout", available, in_payout, line.amount)
        )
    await repository.post_transfers(conn, transfers)
    for line in lines:
        await EVENTS.emit(
            conn,
            ev.PayoutCreated.model_validate(_payout_fields(batch_id, line)),
            tenant_id=tenant_id,
            key=line.holder_id,
            event_id=domain.event_id(ev.PayoutCreated.TYPE, tenant_id, line.id),
        )
    return PayoutBatch(batch_id, unit, threshold, now, lines)


async def get_payout_batch(conn: asyncpg.Connection, tenant_id: str, batch_id: str) -> PayoutBatch:
    found = await repository.payout_batch(conn, tenant_id, batch_id)
    if found is None:
        raise NotFound(f"payout batch '{batch_id}' does not exist", field="batch_id")
    batch, lines = found
    return PayoutBatch(
        batch["id"],
        batch["unit"],
        batch["threshold"],
        batch["created_at"],
        [_line(r) for r in lines],
    )


def batch_csv(batch: PayoutBatch) -> str:
    """The file a merchant hands to its payment provider: one row per line, decimal amounts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "payout_id",
            "batch_id",
            "holder_type",
            "holder_id",
            "amount",
            "currency",
            "amount_minor",
            "status",
        ]
    )
    for line in batch.lines:
        writer.writerow(
            [
                line.id,
                batch.id,
                line.holder_type,
                line.holder_id,
                domain.format_minor(line.amount, line.unit),
                line.unit,
                line.amount,
                line.status,
            ]
        )
    return buffer.getvalue()


async def settle_payout_line(
    conn: asyncpg.Connection,
    tenant_id: str,
    batch_id: str,
    line_id: str,
    status: str,
    reference: str | None,
    reason: str | None,
    now: datetime,
) -> PayoutLine:
    """Marks a pending line paid (in_payout -> paid_out) or failed (in_payout -> available).
    Marking it again the same way answers the same; the other way is a conflict."""
    row = await repository.lock_payout_line(conn, tenant_id, batch_id, line_id)
    if row is None:
        raise NotFound(f"payout line '{line_id}' is not in batch '{batch_id}'", field="line_id")
    line = _line(row)
    if line.status != "pending":
        if line.status == status:
            return line
        raise Conflict(f"payout line '{line_id}' is already {line.status}", field="status")
    available, in_payout, paid_out = _accounts(tenant_id, line)
    if status == "paid":
        transfer = ledger.simple_transfer(
            tenant_id, line.id, "payout_paid", in_payout, paid_out, line.amount
        )
    else:
        transfer = ledger.simple_transfer(
            tenant_id, line.id, "payout_failed", in_payout, available, line.amount
        )
    await repository.post_transfers(conn, [transfer])
    await repository.settle_payout_line(conn, line.id, status, reference, reason, now)
    settled = PayoutLine(
        line.id, line.holder_type, line.holder_id, line.amount, line.unit, status, reference, reason
    )
    fields = _payout_fields(batch_id, settled)
    if status == "paid":
        payload: ev.PayoutPaid | ev.PayoutFailed = ev.PayoutPaid.model_validate(
            {**fields, "reference": reference, "paid_at": now}
        )
    else:
        payload = ev.PayoutFailed.model_validate(
            {**fields, "reason": reason or "failed", "failed_at": now}
        )
    await EVENTS.emit(
        conn,
        payload,
        tenant_id=tenant_id,
        key=line.holder_id,
        event_id=domain.event_id(payload.TYPE, tenant_id, line.id),
    )
    return settled

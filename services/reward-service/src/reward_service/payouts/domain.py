"""Spending available balances, pure: redemptions (credit) and payout batches (cash), the
accounts they move money between, and the file a merchant pays a batch from. No I/O."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from reward_service.holders import HolderType
from reward_service.ledger.domain import AccountKind, AccountRef, holder_ref
from reward_service.units import format_minor

LineStatus = Literal["pending", "paid", "failed"]


@dataclass(frozen=True)
class RedemptionRequest:
    """What a holder asked to spend, under an Idempotency-Key."""

    tenant_id: str
    holder_id: str
    idempotency_key: str
    amount: int
    unit: str
    reference: str | None

    @property
    def request_hash(self) -> str:
        """Tells a replay of this request from another request under the same key."""
        body = f"{self.amount}\x1f{self.unit}\x1f{self.reference or ''}"
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Redemption:
    id: str
    holder_id: str
    amount: int
    unit: str
    reference: str | None
    created_at: datetime
    # False when the Idempotency-Key had already made it (a replay answers the first one)
    created: bool
    request_hash: str


@dataclass(frozen=True)
class PayoutLine:
    id: str
    holder_type: HolderType
    holder_id: str
    amount: int
    unit: str
    status: LineStatus
    reference: str | None = None
    reason: str | None = None

    def account(self, tenant_id: str, kind: AccountKind) -> AccountRef:
        """The line's holder's cash account of `kind`: payouts move available -> in_payout,
        then in_payout -> paid_out (paid) or back to available (failed)."""
        return holder_ref(tenant_id, self.holder_type, self.holder_id, kind, self.unit, "cash")


@dataclass(frozen=True)
class PayoutBatch:
    id: str
    unit: str
    threshold: int
    created_at: datetime
    lines: list[PayoutLine]


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
                format_minor(line.amount, line.unit),
                line.unit,
                line.amount,
                line.status,
            ]
        )
    return buffer.getvalue()

"""The double-entry ledger's pure rules: accounts, transfers, their derived ids, balances. No I/O.

Every movement is a transfer of a positive amount from one account (debit) to another (credit)
in one unit, so each unit sums to zero over all accounts by construction. Account balances are
credits - debits: a program's liability account goes negative by what it owes its holders.

What moves a reward through accounts (earn, release, void, claw-back, debt, settle) is in
earning/postings.py; redemptions and payouts post `simple_transfer`s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from reward_service import ids
from reward_service.holders import HolderType

AccountKind = Literal[
    "liability", "pending", "available", "redeemed", "paid_out", "debt", "in_payout"
]
Purse = Literal["credit", "cash"]
Leg = Literal[
    "earn",
    "release",
    "void",
    "clawback",
    "debt",
    "settle",
    "redeem",
    "payout",
    "payout_paid",
    "payout_failed",
]

_NS_ACCOUNT = ids.namespace("account")
_NS_TRANSFER = ids.namespace("transfer")


def purse_of(reward_kind: str) -> Purse:
    """Cash rewards are kept apart from account credit in the same currency: only cash is paid
    out."""
    return "cash" if reward_kind == "cash" else "credit"


@dataclass(frozen=True)
class AccountRef:
    tenant_id: str
    holder_type: HolderType
    holder_id: str
    kind: AccountKind
    unit: str
    purse: Purse = "credit"

    @property
    def id(self) -> uuid.UUID:
        """Derived from the account's identity, so posting needs no lookup to find it. The
        credit purse keeps the ids of accounts made before purses existed."""
        parts = [self.tenant_id, self.holder_type, self.holder_id, self.kind, self.unit]
        if self.purse != "credit":
            parts.append(self.purse)
        return ids.derive(_NS_ACCOUNT, *parts)


@dataclass(frozen=True)
class Transfer:
    """One immutable movement: `amount` leaves `debit` and arrives in `credit`."""

    id: uuid.UUID
    tenant_id: str
    debit: AccountRef
    credit: AccountRef
    amount: int
    unit: str
    cause: str
    reward_id: str | None
    leg: Leg

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        if self.debit == self.credit:
            raise ValueError("a transfer moves between two different accounts")
        if not (self.debit.unit == self.credit.unit == self.unit):
            raise ValueError("a transfer stays within one unit")
        if not (self.debit.tenant_id == self.credit.tenant_id == self.tenant_id):
            raise ValueError("a transfer stays within one tenant")


def transfer_id(tenant_id: str, cause: str, rule_version_id: str, role: str, leg: Leg) -> uuid.UUID:
    """One id per (cause, rule version, side, leg): a replay of the cause re-derives the same id,
    and the primary key refuses it."""
    return ids.derive(_NS_TRANSFER, tenant_id, cause, rule_version_id, role, leg)


def holder_ref(
    tenant_id: str,
    holder_type: HolderType,
    holder_id: str,
    kind: AccountKind,
    unit: str,
    purse: Purse = "credit",
) -> AccountRef:
    return AccountRef(tenant_id, holder_type, holder_id, kind, unit, purse)


def simple_transfer(
    tenant_id: str, cause: str, leg: Leg, debit: AccountRef, credit: AccountRef, amount: int
) -> Transfer:
    """A transfer caused by an action rather than a reward (redemption, payout line)."""
    return Transfer(
        id=transfer_id(tenant_id, cause, "", "", leg),
        tenant_id=tenant_id,
        debit=debit,
        credit=credit,
        amount=amount,
        unit=debit.unit,
        cause=cause,
        reward_id=None,
        leg=leg,
    )


@dataclass(frozen=True)
class Balance:
    unit: str
    purse: str
    available_minor: int
    pending_minor: int
    debt_minor: int = 0
    in_payout_minor: int = 0


def balances(entries: Iterable[tuple[str, str, str, int]]) -> list[Balance]:
    """Per (unit, purse) balances from (unit, purse, account kind, balance) rows. Debt is shown
    as the positive amount owed."""
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for unit, purse, kind, amount in entries:
        per_kind = totals.setdefault((unit, purse), {})
        per_kind[kind] = per_kind.get(kind, 0) + amount
    return [
        Balance(
            unit,
            purse,
            per_kind.get("available", 0),
            per_kind.get("pending", 0),
            -per_kind.get("debt", 0),
            per_kind.get("in_payout", 0),
        )
        for (unit, purse), per_kind in sorted(totals.items())
    ]


def net_deltas(transfers: Iterable[Transfer]) -> dict[uuid.UUID, int]:
    """Each account's change from a batch of transfers (what the balance rows must move by)."""
    deltas: dict[uuid.UUID, int] = {}
    for t in transfers:
        deltas[t.debit.id] = deltas.get(t.debit.id, 0) - t.amount
        deltas[t.credit.id] = deltas.get(t.credit.id, 0) + t.amount
    return deltas


@dataclass(frozen=True)
class StatementLine:
    """One entry of a holder's statement: a transfer as seen from one of the holder's accounts."""

    seq: int
    transfer_id: uuid.UUID
    leg: str
    account_kind: str
    unit: str
    purse: str
    amount: int  # signed: + credited to the holder's account, - debited from it
    cause: str
    reward_id: str | None
    conversion_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class VerifyReport:
    """The ledger's checks, each with the rows that break it (none when the ledger is sound)."""

    ok: bool
    checks: dict[str, list[Any]]

    @classmethod
    def of(cls, checks: dict[str, list[Any]]) -> VerifyReport:
        return cls(all(not problems for problems in checks.values()), checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"name": name, "ok": not problems, "problems": problems[:50]}
                for name, problems in self.checks.items()
            ],
        }

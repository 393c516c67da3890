"""The double-entry ledger's pure rules: accounts, transfers and their derived ids. No I/O.

Every movement is a transfer of a positive amount from one account (debit) to another (credit)
in one unit, so each unit sums to zero over all accounts by construction. Account balances are
credits - debits: a program's liability account goes negative by what it owes its holders.

Rewards move through accounts in two phases: earn (liability -> pending), then release
(pending -> available) or void (pending -> liability). After release a refund claws back
(available -> liability) or, under the `debt` policy, records what the holder cannot cover as
debt (debt -> liability) which later rewards settle (available -> debt).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from reward_service.domain import HolderType, Reward

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

_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-platform:reward-service")
_NS_ACCOUNT = uuid.uuid5(_NS, "account")
_NS_TRANSFER = uuid.uuid5(_NS, "transfer")


@dataclass(frozen=True)
class AccountRef:
    tenant_id: str
    holder_type: HolderType
    holder_id: str
    kind: AccountKind
    unit: str
    # Cash rewards are kept apart from account credit in the same currency: only cash is paid out.
    purse: Purse = "credit"

    @property
    def id(self) -> uuid.UUID:
        """Derived from the account's identity, so posting needs no lookup to find it. The
        credit purse keeps the ids of accounts made before purses existed."""
        parts = [self.tenant_id, self.holder_type, self.holder_id, self.kind, self.unit]
        if self.purse != "credit":
            parts.append(self.purse)
        return uuid.uuid5(_NS_ACCOUNT, "\x1f".join(parts))


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
    return uuid.uuid5(_NS_TRANSFER, "\x1f".join((tenant_id, cause, rule_version_id, role, leg)))


def program_liability(reward: Reward) -> AccountRef:
    return AccountRef(
        reward.tenant_id, "program", reward.program_id, "liability", reward.unit, _purse(reward)
    )


def holder_account(reward: Reward, kind: AccountKind) -> AccountRef:
    return AccountRef(
        reward.tenant_id, reward.holder_type, reward.holder_id, kind, reward.unit, _purse(reward)
    )


def _purse(reward: Reward) -> Purse:
    return "cash" if reward.kind == "cash" else "credit"


def _reward_cause(reward: Reward) -> str:
    # Referral rewards keep the conversion as cause (ids unchanged since the first version);
    # a milestone bonus is its own cause, so it never collides with the conversion's reward.
    return reward.conversion_id if reward.purpose == "referral" else reward.id


def _reward_transfer(
    reward: Reward,
    leg: Leg,
    debit: AccountRef,
    credit: AccountRef,
    amount: int,
    cause: str | None = None,
) -> Transfer:
    cause = cause or _reward_cause(reward)
    return Transfer(
        id=transfer_id(reward.tenant_id, cause, reward.rule_version_id, reward.role, leg),
        tenant_id=reward.tenant_id,
        debit=debit,
        credit=credit,
        amount=amount,
        unit=reward.unit,
        cause=cause,
        reward_id=reward.id,
        leg=leg,
    )


def earn_transfer(reward: Reward) -> Transfer:
    """Program liability -> the holder's pending (held) or available account."""
    kind: AccountKind = "pending" if reward.state == "pending" else "available"
    return _reward_transfer(
        reward, "earn", program_liability(reward), holder_account(reward, kind), reward.amount
    )


def release_transfer(reward: Reward) -> Transfer:
    """Pending -> available once the holding period is over (what voids left of it)."""
    if reward.state != "pending":
        raise ValueError(f"reward {reward.id} is {reward.state}, not pending")
    return _reward_transfer(
        reward,
        "release",
        holder_account(reward, "pending"),
        holder_account(reward, "available"),
        reward.outstanding,
    )


def void_transfer(reward: Reward, amount: int, refund_id: str) -> Transfer:
    """Pending -> liability: a refund inside the hold takes the (part of the) reward back."""
    return _reward_transfer(
        reward,
        "void",
        holder_account(reward, "pending"),
        program_liability(reward),
        amount,
        cause=refund_id,
    )


def clawback_transfers(
    reward: Reward, from_available: int, as_debt: int, refund_id: str
) -> list[Transfer]:
    out: list[Transfer] = []
    if from_available > 0:
        out.append(
            _reward_transfer(
                reward,
                "clawback",
                holder_account(reward, "available"),
                program_liability(reward),
                from_available,
                cause=refund_id,
            )
        )
    if as_debt > 0:
        out.append(
            _reward_transfer(
                reward,
                "debt",
                holder_account(reward, "debt"),
                program_liability(reward),
                as_debt,
                cause=refund_id,
            )
        )
    return out


def settle_transfer(reward: Reward, amount: int) -> Transfer:
    """Available -> debt: a newly available reward pays off what an earlier claw-back left owed."""
    return _reward_transfer(
        reward,
        "settle",
        holder_account(reward, "available"),
        holder_account(reward, "debt"),
        amount,
        cause=f"settle:{reward.id}",
    )


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

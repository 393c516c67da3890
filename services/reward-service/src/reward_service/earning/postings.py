"""How a reward moves through the ledger's accounts, pure: the transfers of each step, their ids
derived from the cause so a replay posts nothing twice. No I/O.

Rewards move in two phases: earn (liability -> pending), then release (pending -> available) or
void (pending -> liability). After release a refund claws back (available -> liability) or,
under the `debt` policy, records what the holder cannot cover as debt (debt -> liability) which
later rewards settle (available -> debt).
"""

from __future__ import annotations

from reward_service.earning.domain import Reward
from reward_service.ledger.domain import (
    AccountKind,
    AccountRef,
    Leg,
    Transfer,
    purse_of,
    transfer_id,
)


def program_liability(reward: Reward) -> AccountRef:
    return AccountRef(
        reward.tenant_id,
        "program",
        reward.program_id,
        "liability",
        reward.unit,
        purse_of(reward.kind),
    )


def holder_account(reward: Reward, kind: AccountKind) -> AccountRef:
    return AccountRef(
        reward.tenant_id,
        reward.holder_type,
        reward.holder_id,
        kind,
        reward.unit,
        purse_of(reward.kind),
    )


def _cause(reward: Reward) -> str:
    # Referral rewards keep the conversion as cause (ids unchanged since the first version);
    # a milestone bonus is its own cause, so it never collides with the conversion's reward.
    return reward.conversion_id if reward.purpose == "referral" else reward.id


def _transfer(
    reward: Reward,
    leg: Leg,
    debit: AccountRef,
    credit: AccountRef,
    amount: int,
    cause: str | None = None,
) -> Transfer:
    cause = cause or _cause(reward)
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
    return _transfer(
        reward, "earn", program_liability(reward), holder_account(reward, kind), reward.amount
    )


def release_transfer(reward: Reward) -> Transfer:
    """Pending -> available once the holding period is over (what voids left of it)."""
    if reward.state != "pending":
        raise ValueError(f"reward {reward.id} is {reward.state}, not pending")
    return _transfer(
        reward,
        "release",
        holder_account(reward, "pending"),
        holder_account(reward, "available"),
        reward.outstanding,
    )


def void_transfer(reward: Reward, amount: int, refund_id: str) -> Transfer:
    """Pending -> liability: a refund inside the hold takes the (part of the) reward back."""
    return _transfer(
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
    """Available -> liability for what the holder's balance covers (`from_available`), debt ->
    liability for the rest (`as_debt`, under the `debt` policy)."""
    legs: list[tuple[Leg, AccountKind, int]] = [
        ("clawback", "available", from_available),
        ("debt", "debt", as_debt),
    ]
    return [
        _transfer(
            reward,
            leg,
            holder_account(reward, kind),
            program_liability(reward),
            amount,
            cause=refund_id,
        )
        for leg, kind, amount in legs
        if amount > 0
    ]


def settle_transfer(reward: Reward, amount: int) -> Transfer:
    """Available -> debt: a newly available reward pays off what an earlier claw-back left owed."""
    return _transfer(
        reward,
        "settle",
        holder_account(reward, "available"),
        holder_account(reward, "debt"),
        amount,
        cause=f"settle:{reward.id}",
    )

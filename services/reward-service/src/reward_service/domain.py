"""Pure rules of rewards and the ledger: no I/O, so they are unit-tested without infrastructure.

Everything a redelivery could otherwise duplicate (reward ids, transfer ids, event ids, account
ids) is derived here from its cause, so one conversion always maps to the same rows and events,
and the database's unique keys turn a replay into a no-op instead of a second posting.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from servicekit import money

Clock = Callable[[], datetime]
Trigger = Literal["first_purchase", "every_purchase", "signup"]
Role = Literal["advocate", "friend"]
HolderType = Literal["program", "advocate", "customer"]
AccountKind = Literal["liability", "pending", "available", "redeemed", "paid_out"]
RewardState = Literal["pending", "available"]
RewardKind = Literal["credit"]
Leg = Literal["earn", "release"]

# Far below bigint's range, so sums over many transfers cannot overflow either.
MAX_AMOUNT_MINOR = 10**12
MAX_HOLD_DAYS = 3650

# Fixed namespaces: changing one would re-key every derived id, so they never change.
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-platform:reward-service")
_NS_ACCOUNT = uuid.uuid5(_NS, "account")
_NS_TRANSFER = uuid.uuid5(_NS, "transfer")
_NS_REWARD = uuid.uuid5(_NS, "reward")
_NS_EVENT = uuid.uuid5(_NS, "event")


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC (the platform's events are all UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- money ----------------------------------------------------------------------------------


def parse_currency(code: str) -> str | None:
    """The upper-cased ISO 4217 code, or None when it names no currency in use today."""
    normalized = code.strip().upper()
    return normalized if money.is_currency(normalized) else None


exponent = money.exponent
format_minor = money.format_minor


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SideReward:
    """What one side of a referral earns, and on which conversion."""

    role: Role
    trigger: Trigger
    amount_minor: int
    unit: str
    kind: RewardKind = "credit"


@dataclass(frozen=True)
class RuleDefinition:
    """The content of a rule version; two versions with equal definitions reward alike."""

    hold_days: int
    rewards: tuple[SideReward, ...]

    def side(self, role: Role) -> SideReward | None:
        return next((r for r in self.rewards if r.role == role), None)


@dataclass(frozen=True)
class RuleVersion:
    id: str
    tenant_id: str
    program_id: str
    version: int
    valid_from: datetime
    definition: RuleDefinition
    created_at: datetime


def next_version(latest: RuleVersion | None, now: datetime) -> tuple[int, datetime]:
    """Number and valid_from of the version after `latest`. valid_from never goes backwards, so
    the newest version is the one in force even if replicas' clocks disagree slightly."""
    if latest is None:
        return 1, now
    return latest.version + 1, max(now, latest.valid_from)


# --- conversions and rewards ------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """The facts of an attributed conversion that rewarding depends on."""

    tenant_id: str
    conversion_id: str
    referral_id: str
    program_id: str
    advocate_id: str
    friend_customer_id: str
    conversion_type: str
    is_first_purchase: bool
    occurred_at: datetime
    order_amount_minor: int | None = None
    order_currency: str | None = None


def trigger_matches(trigger: Trigger, conversion_type: str, is_first_purchase: bool) -> bool:
    if trigger == "signup":
        return conversion_type == "signup"
    if conversion_type != "purchase":
        return False
    return trigger == "every_purchase" or is_first_purchase


def reward_amount(side: SideReward, conversion: Conversion) -> int:
    """Minor units earned; fixed amounts only for now (percent of order comes with #6)."""
    del conversion  # a fixed reward does not depend on the order
    return side.amount_minor


def holder_of(role: Role, conversion: Conversion) -> tuple[HolderType, str]:
    if role == "advocate":
        return "advocate", conversion.advocate_id
    return "customer", conversion.friend_customer_id


def _short_id(prefix: str, namespace: uuid.UUID, name: str) -> str:
    # Same look as servicekit.ids.new_id (prefix + 24 base32 chars), but derived, not random.
    token = base64.b32encode(uuid.uuid5(namespace, name).bytes[:15]).decode().lower()
    return f"{prefix}_{token}"


def reward_id(tenant_id: str, conversion_id: str, rule_version_id: str, role: Role) -> str:
    return _short_id(
        "rwd", _NS_REWARD, f"{tenant_id}\x1f{conversion_id}\x1f{rule_version_id}\x1f{role}"
    )


@dataclass(frozen=True)
class Reward:
    id: str
    tenant_id: str
    program_id: str
    rule_version_id: str
    role: Role
    holder_type: HolderType
    holder_id: str
    advocate_id: str
    conversion_id: str
    referral_id: str
    kind: RewardKind
    amount: int
    unit: str
    state: RewardState
    available_at: datetime


def rewards_earned(rule: RuleVersion, conversion: Conversion) -> list[Reward]:
    """The rewards a conversion earns under the rule version in force at its occurred_at."""
    earned: list[Reward] = []
    hold = rule.definition.hold_days
    available_at = as_utc(conversion.occurred_at) + timedelta(days=hold)
    for side in rule.definition.rewards:
        if not trigger_matches(
            side.trigger, conversion.conversion_type, conversion.is_first_purchase
        ):
            continue
        amount = reward_amount(side, conversion)
        if amount <= 0:
            continue
        holder_type, holder_id = holder_of(side.role, conversion)
        earned.append(
            Reward(
                id=reward_id(conversion.tenant_id, conversion.conversion_id, rule.id, side.role),
                tenant_id=conversion.tenant_id,
                program_id=conversion.program_id,
                rule_version_id=rule.id,
                role=side.role,
                holder_type=holder_type,
                holder_id=holder_id,
                advocate_id=conversion.advocate_id,
                conversion_id=conversion.conversion_id,
                referral_id=conversion.referral_id,
                kind=side.kind,
                amount=amount,
                unit=side.unit,
                state="pending" if hold > 0 else "available",
                available_at=available_at,
            )
        )
    return earned


# --- ledger ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRef:
    tenant_id: str
    holder_type: HolderType
    holder_id: str
    kind: AccountKind
    unit: str

    @property
    def id(self) -> uuid.UUID:
        """Derived from the account's identity, so posting needs no lookup to find it."""
        return uuid.uuid5(
            _NS_ACCOUNT,
            "\x1f".join((self.tenant_id, self.holder_type, self.holder_id, self.kind, self.unit)),
        )


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


def transfer_id(
    tenant_id: str, cause: str, rule_version_id: str, role: Role, leg: Leg
) -> uuid.UUID:
    """One id per (cause, rule version, side, leg): a replay of the cause re-derives the same id,
    and the primary key refuses it."""
    return uuid.uuid5(_NS_TRANSFER, "\x1f".join((tenant_id, cause, rule_version_id, role, leg)))


def program_liability(reward: Reward) -> AccountRef:
    return AccountRef(reward.tenant_id, "program", reward.program_id, "liability", reward.unit)


def holder_account(reward: Reward, kind: AccountKind) -> AccountRef:
    return AccountRef(reward.tenant_id, reward.holder_type, reward.holder_id, kind, reward.unit)


def earn_transfer(reward: Reward) -> Transfer:
    """Program liability -> the holder's pending (held) or available account."""
    return Transfer(
        id=transfer_id(
            reward.tenant_id, reward.conversion_id, reward.rule_version_id, reward.role, "earn"
        ),
        tenant_id=reward.tenant_id,
        debit=program_liability(reward),
        credit=holder_account(reward, reward.state),
        amount=reward.amount,
        unit=reward.unit,
        cause=reward.conversion_id,
        reward_id=reward.id,
        leg="earn",
    )


def release_transfer(reward: Reward) -> Transfer:
    """Pending -> available once the holding period is over."""
    if reward.state != "pending":
        raise ValueError(f"reward {reward.id} is {reward.state}, not pending")
    return Transfer(
        id=transfer_id(
            reward.tenant_id, reward.conversion_id, reward.rule_version_id, reward.role, "release"
        ),
        tenant_id=reward.tenant_id,
        debit=holder_account(reward, "pending"),
        credit=holder_account(reward, "available"),
        amount=reward.amount,
        unit=reward.unit,
        cause=reward.conversion_id,
        reward_id=reward.id,
        leg="release",
    )


def reward_event_id(reward_id: str, event_type: str) -> str:
    """One event per reward and state: the outbox's unique event id absorbs a second emit."""
    return str(uuid.uuid5(_NS_EVENT, f"{reward_id}\x1f{event_type}"))


@dataclass(frozen=True)
class Balance:
    unit: str
    available_minor: int
    pending_minor: int


def balances(entries: Iterable[tuple[str, str, int]]) -> list[Balance]:
    """Per-unit balances from (unit, account kind, credits - debits) rows, sorted by unit."""
    totals: dict[str, dict[str, int]] = {}
    for unit, kind, amount in entries:
        per_kind = totals.setdefault(unit, {})
        per_kind[kind] = per_kind.get(kind, 0) + amount
    return [
        Balance(unit, per_kind.get("available", 0), per_kind.get("pending", 0))
        for unit, per_kind in sorted(totals.items())
    ]

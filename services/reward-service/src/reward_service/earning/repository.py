"""SQL of earning: advocates' referral counts, cap usage, program spend, rewards and refunds.
Functions take the caller's connection: the edge owns the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from reward_service.earning import domain
from reward_service.rules.domain import Period
from servicekit.sql import Params, record_as

# --- referral counts, caps, budget ------------------------------------------------------------


async def lock_advocate(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, advocate_id: str
) -> int:
    """Locks the advocate's counter row (created on first use) until the transaction ends and
    returns their count of successful referrals. Everything that reads and then raises an
    advocate's count, cap usage or a program's spend runs under this lock."""
    count: int = await conn.fetchval(
        """
        INSERT INTO advocate_counters (tenant_id, program_id, advocate_id) VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id, program_id, advocate_id)
            DO UPDATE SET referrals = advocate_counters.referrals
        RETURNING referrals
        """,
        tenant_id,
        program_id,
        advocate_id,
    )
    return count


async def referral_number(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, referral_id: str
) -> int | None:
    number: int | None = await conn.fetchval(
        """
        SELECT number FROM successful_referrals
        WHERE tenant_id = $1 AND program_id = $2 AND referral_id = $3
        """,
        tenant_id,
        program_id,
        referral_id,
    )
    return number


async def record_successful_referral(
    conn: asyncpg.Connection, conversion: domain.Conversion
) -> int:
    """Numbers the conversion's referral next in its advocate's count (caller holds
    lock_advocate)."""
    number: int = await conn.fetchval(
        """
        UPDATE advocate_counters SET referrals = referrals + 1
        WHERE tenant_id = $1 AND program_id = $2 AND advocate_id = $3
        RETURNING referrals
        """,
        conversion.tenant_id,
        conversion.program_id,
        conversion.advocate_id,
    )
    await conn.execute(
        """
        INSERT INTO successful_referrals (tenant_id, program_id, referral_id, advocate_id, number,
                                          conversion_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        conversion.tenant_id,
        conversion.program_id,
        conversion.referral_id,
        conversion.advocate_id,
        number,
        conversion.conversion_id,
    )
    return number


async def cap_usage(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    unit: str,
    keys: Mapping[Period, str],
) -> dict[Period, domain.Usage]:
    """The advocate's usage in each period, by the period's key (none yet: zero usage)."""
    rows = await conn.fetch(
        """
        SELECT period_key, count, amount FROM cap_usage
        WHERE tenant_id = $1 AND program_id = $2 AND advocate_id = $3 AND unit = $4
          AND period_key = ANY($5::text[])
        """,
        tenant_id,
        program_id,
        advocate_id,
        unit,
        list(keys.values()),
    )
    by_key = {r["period_key"]: domain.Usage(r["count"], r["amount"]) for r in rows}
    return {p: by_key.get(k, domain.Usage()) for p, k in keys.items()}


async def add_cap_usage(
    conn: asyncpg.Connection, reward: domain.Reward, deltas: Mapping[str, domain.Usage]
) -> None:
    """Adds usage deltas to the reward's advocate, by period key; they may be negative (a void
    gives back), usage never goes below zero."""
    await conn.executemany(
        """
        INSERT INTO cap_usage (tenant_id, program_id, advocate_id, unit, period_key, count, amount)
        VALUES ($1, $2, $3, $4, $5, greatest($6, 0), greatest($7, 0))
        ON CONFLICT (tenant_id, program_id, advocate_id, period_key, unit) DO UPDATE
            SET count = greatest(cap_usage.count + $6, 0),
                amount = greatest(cap_usage.amount + $7, 0)
        """,
        [
            (
                reward.tenant_id,
                reward.program_id,
                reward.advocate_id,
                reward.unit,
                key,
                d.count,
                d.amount,
            )
            for key, d in deltas.items()
        ],
    )


async def program_spent(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, unit: str
) -> int:
    """The program's spend in `unit`, its row created if need be and locked until the
    transaction ends, so two advocates' rewards cannot both take the budget's last room."""
    spent: int | None = await conn.fetchval(
        """
        INSERT INTO program_spend (tenant_id, program_id, unit) VALUES ($1, $2, $3)
        ON CONFLICT (tenant_id, program_id, unit) DO UPDATE SET spent = program_spend.spent
        RETURNING spent
        """,
        tenant_id,
        program_id,
        unit,
    )
    return spent or 0


async def add_program_spend(conn: asyncpg.Connection, reward: domain.Reward, delta: int) -> None:
    """Counts `delta` of the reward's unit against its program's budget (negative: gives back)."""
    await conn.execute(
        """
        INSERT INTO program_spend (tenant_id, program_id, unit, spent)
        VALUES ($1, $2, $3, greatest($4, 0))
        ON CONFLICT (tenant_id, program_id, unit)
            DO UPDATE SET spent = greatest(program_spend.spent + $4, 0)
        """,
        reward.tenant_id,
        reward.program_id,
        reward.unit,
        delta,
    )


# --- rewards ------------------------------------------------------------------------------------

_REWARD = Params.typed(
    "id",
    "tenant_id",
    "program_id",
    "rule_version_id",
    "role",
    "holder_type",
    "holder_id",
    "advocate_id",
    "conversion_id",
    "referral_id",
    "kind",
    "amount",
    "unit",
    "state",
    "available_at",
    "source_event_id",
    "released_at",
    "purpose",
    "requested_amount",
    "capped_reason",
    "capped_period",
    "trigger",
    "rule_version",
    "scalable",
    "order_amount_minor",
    "clawback",
    "occurred_at",
    "segment",
)
_INSERT_REWARD = _REWARD.insert("rewards", "ON CONFLICT DO NOTHING RETURNING true")


async def existing_rewards(conn: asyncpg.Connection, reward_ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM rewards WHERE id = ANY($1::text[])", reward_ids)
    return {r["id"] for r in rows}


async def insert_reward(
    conn: asyncpg.Connection, reward: domain.Reward, source_event_id: str, now: datetime
) -> bool:
    """False when this reward already exists (a replay under any event id). A reward issued
    available is released `now`."""
    inserted = await conn.fetchval(
        _INSERT_REWARD,
        *_REWARD.values(
            reward,
            source_event_id=source_event_id,
            released_at=now if reward.state == "available" else None,
        ),
    )
    return bool(inserted)


async def lock_due_rewards(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[domain.Reward]:
    """Pending rewards whose hold has ended, locked for this transaction. SKIP LOCKED lets
    several replicas release side by side without waiting on, or double-releasing, a row."""
    rows = await conn.fetch(
        """
        SELECT * FROM rewards
        WHERE state = 'pending' AND available_at <= $1
        ORDER BY available_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        now,
        limit,
    )
    return [record_as(domain.Reward, r) for r in rows]


async def mark_available(
    conn: asyncpg.Connection, reward_ids: Sequence[str], released_at: datetime
) -> None:
    status = await conn.execute(
        """
        UPDATE rewards SET state = 'available', released_at = $2
        WHERE id = ANY($1::text[]) AND state = 'pending'
        """,
        list(reward_ids),
        released_at,
    )
    if status != f"UPDATE {len(reward_ids)}":
        raise RuntimeError(f"expected {len(reward_ids)} pending rewards, {status}")


async def latest_refund(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> domain.Refund | None:
    """The conversion's refund recorded with the largest refunded total (a full one first):
    what it says covers every earlier one, since refunds carry the running total."""
    row = await conn.fetchrow(
        f"SELECT {', '.join(_REFUND.names)} FROM refunds"  # noqa: S608
        " WHERE tenant_id = $1 AND conversion_id = $2"
        " ORDER BY full_refund DESC, refunded_total_minor DESC LIMIT 1",
        tenant_id,
        conversion_id,
    )
    return record_as(domain.Refund, row) if row else None


async def lock_conversion_rewards(
    conn: asyncpg.Connection, tenant_id: str, conversion_id: str
) -> list[domain.Reward]:
    """The referral rewards of a conversion (milestone bonuses are not refunded), locked."""
    rows = await conn.fetch(
        """
        SELECT * FROM rewards
        WHERE tenant_id = $1 AND conversion_id = $2 AND purpose = 'referral'
        ORDER BY id FOR UPDATE
        """,
        tenant_id,
        conversion_id,
    )
    return [record_as(domain.Reward, r) for r in rows]


async def take_back(
    conn: asyncpg.Connection, reward_id: str, voided: int, clawed: int, at: datetime
) -> None:
    """Records what a refund took back; a reward whose whole amount was voided in its hold
    leaves the release schedule."""
    await conn.execute(
        """
        UPDATE rewards
        SET voided_amount = voided_amount + $2,
            clawed_back_amount = clawed_back_amount + $3,
            state = CASE WHEN state = 'pending' AND voided_amount + $2 >= amount
                         THEN 'voided' ELSE state END,
            voided_at = CASE WHEN $2 > 0 THEN $4 ELSE voided_at END
        WHERE id = $1
        """,
        reward_id,
        voided,
        clawed,
        at,
    )


# --- refunds ------------------------------------------------------------------------------------

_REFUND = Params.typed(
    "tenant_id",
    "refund_id",
    "conversion_id",
    "amount_minor",
    "refunded_total_minor",
    "full_refund",
    "refunded_at",
)
_INSERT_REFUND = _REFUND.insert("refunds", "ON CONFLICT DO NOTHING RETURNING true")


async def insert_refund(conn: asyncpg.Connection, refund: domain.Refund) -> bool:
    """False when this refund was already recorded (under any event id)."""
    inserted = await conn.fetchval(_INSERT_REFUND, *_REFUND.values(refund))
    return bool(inserted)

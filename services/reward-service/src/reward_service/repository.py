"""All of reward-service's SQL. Functions take the caller's connection: the edge owns the
transaction; nothing here commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from reward_service import domain


def _rule(row: asyncpg.Record) -> domain.RuleVersion:
    sides: list[dict[str, Any]] = row["rewards"]
    return domain.RuleVersion(
        id=row["id"],
        tenant_id=row["tenant_id"],
        program_id=row["program_id"],
        version=row["version"],
        valid_from=row["valid_from"],
        created_at=row["created_at"],
        definition=domain.RuleDefinition(
            hold_days=row["hold_days"],
            rewards=tuple(
                domain.SideReward(
                    role=s["role"],
                    trigger=s["trigger"],
                    kind=s["kind"],
                    amount_minor=int(s["amount_minor"]),
                    unit=s["unit"],
                )
                for s in sides
            ),
        ),
    )


async def lock_program_rules(conn: asyncpg.Connection, tenant_id: str, program_id: str) -> None:
    """Serialises rule changes of one program until the transaction ends, so version numbers
    and valid_from are assigned one writer at a time."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"reward-rule\x1f{tenant_id}\x1f{program_id}",
    )


async def latest_rule(
    conn: asyncpg.Connection, tenant_id: str, program_id: str
) -> domain.RuleVersion | None:
    return await rule_in_force(conn, tenant_id, program_id, None)


async def rule_in_force(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, at: datetime | None
) -> domain.RuleVersion | None:
    """The version with the latest valid_from <= `at` (any, when `at` is None). valid_from
    never decreases from one version to the next (domain.next_version), so the latest
    valid_from is also the highest version among those that qualify."""
    row = await conn.fetchrow(
        """
        SELECT v.id, v.tenant_id, v.program_id, v.version, v.valid_from, v.hold_days,
               v.created_at,
               jsonb_agg(jsonb_build_object(
                   'role', r.role, 'trigger', r.trigger, 'kind', r.kind,
                   'amount_minor', r.amount_minor, 'unit', r.unit) ORDER BY r.role) AS rewards
        FROM rule_versions v JOIN rule_rewards r ON r.rule_version_id = v.id
        WHERE v.id = (SELECT id FROM rule_versions
                      WHERE tenant_id = $1 AND program_id = $2
                        AND ($3::timestamptz IS NULL OR valid_from <= $3)
                      ORDER BY valid_from DESC, version DESC LIMIT 1)
        GROUP BY v.id
        """,
        tenant_id,
        program_id,
        at,
    )
    return _rule(row) if row else None


async def insert_rule_version(
    conn: asyncpg.Connection,
    *,
    rule_id: str,
    tenant_id: str,
    program_id: str,
    version: int,
    valid_from: datetime,
    definition: domain.RuleDefinition,
) -> domain.RuleVersion:
    created_at: datetime = await conn.fetchval(
        """
        INSERT INTO rule_versions (id, tenant_id, program_id, version, valid_from, hold_days)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at
        """,
        rule_id,
        tenant_id,
        program_id,
        version,
        valid_from,
        definition.hold_days,
    )
    await conn.executemany(
        """
        INSERT INTO rule_rewards (rule_version_id, role, trigger, kind, amount_minor, unit)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        [(rule_id, s.role, s.trigger, s.kind, s.amount_minor, s.unit) for s in definition.rewards],
    )
    return domain.RuleVersion(
        id=rule_id,
        tenant_id=tenant_id,
        program_id=program_id,
        version=version,
        valid_from=valid_from,
        definition=definition,
        created_at=created_at,
    )


async def insert_reward(
    conn: asyncpg.Connection, reward: domain.Reward, source_event_id: str
) -> bool:
    """False when this conversion already earned this reward (a replay under any event id)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO rewards (id, tenant_id, program_id, rule_version_id, role, holder_type,
                             holder_id, advocate_id, conversion_id, referral_id, kind, amount,
                             unit, state, available_at, source_event_id,
                             released_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                CASE WHEN $14::text = 'available' THEN now() END)
        ON CONFLICT DO NOTHING RETURNING true
        """,
        reward.id,
        reward.tenant_id,
        reward.program_id,
        reward.rule_version_id,
        reward.role,
        reward.holder_type,
        reward.holder_id,
        reward.advocate_id,
        reward.conversion_id,
        reward.referral_id,
        reward.kind,
        reward.amount,
        reward.unit,
        reward.state,
        reward.available_at,
        source_event_id,
    )
    return bool(inserted)


def _reward(row: asyncpg.Record) -> domain.Reward:
    return domain.Reward(
        id=row["id"],
        tenant_id=row["tenant_id"],
        program_id=row["program_id"],
        rule_version_id=row["rule_version_id"],
        role=row["role"],
        holder_type=row["holder_type"],
        holder_id=row["holder_id"],
        advocate_id=row["advocate_id"],
        conversion_id=row["conversion_id"],
        referral_id=row["referral_id"],
        kind=row["kind"],
        amount=row["amount"],
        unit=row["unit"],
        state=row["state"],
        available_at=row["available_at"],
    )


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
    return [_reward(r) for r in rows]


async def mark_available(conn: asyncpg.Connection, reward_id: str, released_at: datetime) -> None:
    status = await conn.execute(
        """
        UPDATE rewards SET state = 'available', released_at = $2
        WHERE id = $1 AND state = 'pending'
        """,
        reward_id,
        released_at,
    )
    if status != "UPDATE 1":
        raise RuntimeError(f"reward {reward_id} was not pending")


async def ensure_accounts(conn: asyncpg.Connection, refs: list[domain.AccountRef]) -> None:
    await conn.execute(
        """
        INSERT INTO accounts (id, tenant_id, holder_type, holder_id, kind, unit)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[])
        ON CONFLICT DO NOTHING
        """,
        [r.id for r in refs],
        [r.tenant_id for r in refs],
        [r.holder_type for r in refs],
        [r.holder_id for r in refs],
        [r.kind for r in refs],
        [r.unit for r in refs],
    )


async def insert_transfer(conn: asyncpg.Connection, transfer: domain.Transfer) -> None:
    """A plain INSERT: a second posting of the same cause violates the primary key and rolls
    the whole transaction back rather than being skipped silently."""
    await conn.execute(
        """
        INSERT INTO transfers (id, tenant_id, debit_account, credit_account, amount, unit,
                               cause, reward_id, leg)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        transfer.id,
        transfer.tenant_id,
        transfer.debit.id,
        transfer.credit.id,
        transfer.amount,
        transfer.unit,
        transfer.cause,
        transfer.reward_id,
        transfer.leg,
    )


async def holder_entries(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[tuple[str, str, int]]:
    """(unit, kind, credits - debits) of a holder's pending and available accounts."""
    rows = await conn.fetch(
        """
        SELECT a.unit, a.kind,
               (coalesce((SELECT sum(t.amount) FROM transfers t
                          WHERE t.credit_account = a.id), 0)
                - coalesce((SELECT sum(t.amount) FROM transfers t
                            WHERE t.debit_account = a.id), 0))::bigint AS balance
        FROM accounts a
        WHERE a.tenant_id = $1 AND a.holder_id = $2 AND a.holder_type <> 'program'
          AND a.kind IN ('pending', 'available')
        """,
        tenant_id,
        holder_id,
    )
    return [(r["unit"], r["kind"], r["balance"]) for r in rows]

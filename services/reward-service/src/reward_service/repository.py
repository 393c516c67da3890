"""All of reward-service's SQL. Functions take the caller's connection: the edge owns the
transaction; nothing here commits.

JSON columns are passed and read as text (`::text::jsonb`, `::text`), so the functions work the
same on the service's pool (which has a jsonb codec) and on a bare connection (tests, bench)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reward_service import domain, ledger

# --- rules ------------------------------------------------------------------------------------


def _rule(row: asyncpg.Record) -> domain.RuleVersion:
    return domain.RuleVersion(
        id=row["id"],
        tenant_id=row["tenant_id"],
        program_id=row["program_id"],
        version=row["version"],
        valid_from=row["valid_from"],
        created_at=row["created_at"],
        definition=domain.definition_from_json(json.loads(row["definition"])),
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
        SELECT id, tenant_id, program_id, version, valid_from, created_at,
               definition::text AS definition
        FROM rule_versions
        WHERE tenant_id = $1 AND program_id = $2
          AND ($3::timestamptz IS NULL OR valid_from <= $3)
        ORDER BY valid_from DESC, version DESC LIMIT 1
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
        INSERT INTO rule_versions (id, tenant_id, program_id, version, valid_from, hold_days,
                                   definition)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) RETURNING created_at
        """,
        rule_id,
        tenant_id,
        program_id,
        version,
        valid_from,
        definition.hold_days,
        json.dumps(domain.definition_to_json(definition)),
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


async def coupon_pool_exists(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, pool_id: str
) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM coupon_pools WHERE id = $1 AND tenant_id = $2 AND program_id = $3",
            pool_id,
            tenant_id,
            program_id,
        )
    )


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
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    referral_id: str,
    conversion_id: str,
) -> int:
    """Numbers the referral next in the advocate's count (caller holds lock_advocate)."""
    number: int = await conn.fetchval(
        """
        UPDATE advocate_counters SET referrals = referrals + 1
        WHERE tenant_id = $1 AND program_id = $2 AND advocate_id = $3
        RETURNING referrals
        """,
        tenant_id,
        program_id,
        advocate_id,
    )
    await conn.execute(
        """
        INSERT INTO successful_referrals (tenant_id, program_id, referral_id, advocate_id, number,
                                          conversion_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        tenant_id,
        program_id,
        referral_id,
        advocate_id,
        number,
        conversion_id,
    )
    return number


async def cap_usage(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    unit: str,
    keys: dict[domain.Period, str],
) -> dict[domain.Period, domain.Usage]:
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
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    advocate_id: str,
    unit: str,
    deltas: Iterable[tuple[str, int, int]],
) -> None:
    """Adds (period_key, count, amount) deltas; amounts may be negative (a void gives back)."""
    await conn.executemany(
        """
        INSERT INTO cap_usage (tenant_id, program_id, advocate_id, unit, period_key, count, amount)
        VALUES ($1, $2, $3, $4, $5, greatest($6, 0), greatest($7, 0))
        ON CONFLICT (tenant_id, program_id, advocate_id, period_key, unit) DO UPDATE
            SET count = greatest(cap_usage.count + $6, 0),
                amount = greatest(cap_usage.amount + $7, 0)
        """,
        [(tenant_id, program_id, advocate_id, unit, k, c, a) for k, c, a in deltas],
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


async def add_program_spend(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, unit: str, delta: int
) -> None:
    await conn.execute(
        """
        INSERT INTO program_spend (tenant_id, program_id, unit, spent)
        VALUES ($1, $2, $3, greatest($4, 0))
        ON CONFLICT (tenant_id, program_id, unit)
            DO UPDATE SET spent = greatest(program_spend.spent + $4, 0)
        """,
        tenant_id,
        program_id,
        unit,
        delta,
    )


# --- rewards ------------------------------------------------------------------------------------

_REWARD_COLUMNS = (
    "id, tenant_id, program_id, rule_version_id, role, holder_type, holder_id, advocate_id, "
    "conversion_id, referral_id, kind, amount, unit, state, available_at, source_event_id, "
    "released_at, purpose, requested_amount, capped_reason, capped_period, trigger, "
    "rule_version, scalable, order_amount_minor, clawback, occurred_at"
)


async def existing_rewards(conn: asyncpg.Connection, reward_ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM rewards WHERE id = ANY($1::text[])", reward_ids)
    return {r["id"] for r in rows}


async def insert_reward(
    conn: asyncpg.Connection, reward: domain.Reward, source_event_id: str, now: datetime
) -> bool:
    """False when this reward already exists (a replay under any event id)."""
    inserted = await conn.fetchval(
        f"""
        INSERT INTO rewards ({_REWARD_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                CASE WHEN $14::text = 'available' THEN $26::timestamptz END,
                $17, $18, $19, $20, $21, $22, $23, $24, $25, $27)
        ON CONFLICT DO NOTHING RETURNING true
        """,  # noqa: S608 - the column list is a constant
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
        reward.purpose,
        reward.requested_amount,
        reward.capped_reason,
        reward.capped_period,
        reward.trigger,
        reward.rule_version,
        reward.scalable,
        reward.order_amount_minor,
        reward.clawback,
        now,
        reward.occurred_at,
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
        requested_amount=row["requested_amount"],
        capped_reason=row["capped_reason"],
        capped_period=row["capped_period"],
        purpose=row["purpose"],
        trigger=row["trigger"],
        rule_version=row["rule_version"],
        scalable=row["scalable"],
        order_amount_minor=row["order_amount_minor"],
        voided_amount=row["voided_amount"],
        clawed_back_amount=row["clawed_back_amount"],
        clawback=row["clawback"],
        occurred_at=row["occurred_at"],
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
    return [_reward(r) for r in rows]


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


async def insert_refund(
    conn: asyncpg.Connection,
    tenant_id: str,
    refund_id: str,
    conversion_id: str,
    amount_minor: int,
    refunded_total_minor: int,
    full: bool,
    refunded_at: datetime,
) -> bool:
    inserted = await conn.fetchval(
        """
        INSERT INTO refunds (tenant_id, refund_id, conversion_id, amount_minor,
                             refunded_total_minor, full_refund, refunded_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true
        """,
        tenant_id,
        refund_id,
        conversion_id,
        amount_minor,
        refunded_total_minor,
        full,
        refunded_at,
    )
    return bool(inserted)


# --- ledger -------------------------------------------------------------------------------------


async def post_transfers(conn: asyncpg.Connection, transfers: Sequence[ledger.Transfer]) -> None:
    """Posts transfers and moves the balance rows in ONE statement, whatever the batch size:
    missing accounts are created, the transfers inserted, and each touched account's net delta
    upserted into its balance row. The upsert takes the rows in account id order, so two
    batches over the same accounts queue instead of deadlocking; ON CONFLICT DO UPDATE adds to
    the latest committed balance (also one another transaction created a moment ago).

    A plain INSERT of the transfers: a second posting of the same cause violates the primary
    key and rolls the whole transaction back rather than being skipped silently."""
    if not transfers:
        return
    accounts = list({a.id: a for t in transfers for a in (t.debit, t.credit)}.values())
    deltas = ledger.net_deltas(transfers)
    ordered = sorted(deltas)
    await conn.execute(
        """
        WITH created AS (
            INSERT INTO accounts (id, tenant_id, holder_type, holder_id, kind, unit, purse)
            SELECT * FROM unnest($10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[],
                                 $15::text[], $16::text[]) AS u(id)
            WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = u.id)
            ON CONFLICT DO NOTHING
            RETURNING id
        ), posted AS (
            INSERT INTO transfers (id, tenant_id, debit_account, credit_account, amount, unit,
                                   cause, reward_id, leg)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::bigint[],
                                 $6::text[], $7::text[], $8::text[], $9::text[])
            RETURNING 1
        )
        INSERT INTO balances (account_id, balance)
        SELECT d.account_id, d.delta
        FROM unnest($17::uuid[], $18::bigint[]) WITH ORDINALITY AS d(account_id, delta, n)
        ORDER BY d.n
        ON CONFLICT (account_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance
        """,
        [t.id for t in transfers],
        [t.tenant_id for t in transfers],
        [t.debit.id for t in transfers],
        [t.credit.id for t in transfers],
        [t.amount for t in transfers],
        [t.unit for t in transfers],
        [t.cause for t in transfers],
        [t.reward_id for t in transfers],
        [t.leg for t in transfers],
        [a.id for a in accounts],
        [a.tenant_id for a in accounts],
        [a.holder_type for a in accounts],
        [a.holder_id for a in accounts],
        [a.kind for a in accounts],
        [a.unit for a in accounts],
        [a.purse for a in accounts],
        ordered,
        [deltas[a] for a in ordered],
    )


async def lock_balance(conn: asyncpg.Connection, account: ledger.AccountRef) -> int:
    """The account's balance, its row locked until the transaction ends (0 if it has none)."""
    balance: int | None = await conn.fetchval(
        "SELECT balance FROM balances WHERE account_id = $1 FOR UPDATE", account.id
    )
    return balance or 0


async def balance_of(conn: asyncpg.Connection, account: ledger.AccountRef) -> int:
    balance: int | None = await conn.fetchval(
        "SELECT balance FROM balances WHERE account_id = $1", account.id
    )
    return balance or 0


async def holder_entries(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> list[tuple[str, str, str, int]]:
    """(unit, purse, kind, balance) of a holder's accounts."""
    rows = await conn.fetch(
        """
        SELECT a.unit, a.purse, a.kind, b.balance
        FROM accounts a JOIN balances b ON b.account_id = a.id
        WHERE a.tenant_id = $1 AND a.holder_id = $2 AND a.holder_type <> 'program'
          AND a.kind IN ('pending', 'available', 'debt', 'in_payout')
        """,
        tenant_id,
        holder_id,
    )
    return [(r["unit"], r["purse"], r["kind"], r["balance"]) for r in rows]


async def holder_type_of(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str
) -> domain.HolderType | None:
    holder_type: domain.HolderType | None = await conn.fetchval(
        """
        SELECT holder_type FROM accounts
        WHERE tenant_id = $1 AND holder_id = $2 AND holder_type <> 'program'
        ORDER BY holder_type LIMIT 1
        """,
        tenant_id,
        holder_id,
    )
    return holder_type


@dataclass(frozen=True)
class StatementLine:
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


async def statement(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str, after_seq: int, limit: int
) -> list[StatementLine]:
    """The holder's entries in posting order, each with its cause and (for reward legs) the
    conversion behind it. A transfer between two of the holder's own accounts (a release) shows
    as two lines, one per account."""
    rows = await conn.fetch(
        """
        WITH mine AS (
            SELECT id, kind, unit, purse FROM accounts
            WHERE tenant_id = $1 AND holder_id = $2 AND holder_type <> 'program'
        )
        SELECT t.seq, t.id, t.leg, m.kind, m.unit, m.purse,
               CASE WHEN t.credit_account = m.id THEN t.amount ELSE -t.amount END AS amount,
               t.cause, t.reward_id, r.conversion_id, t.created_at
        FROM mine m
        JOIN transfers t ON t.credit_account = m.id OR t.debit_account = m.id
        LEFT JOIN rewards r ON r.id = t.reward_id
        WHERE t.seq > $3
        ORDER BY t.seq, m.kind
        LIMIT $4
        """,
        tenant_id,
        holder_id,
        after_seq,
        limit,
    )
    return [
        StatementLine(
            seq=r["seq"],
            transfer_id=r["id"],
            leg=r["leg"],
            account_kind=r["kind"],
            unit=r["unit"],
            purse=r["purse"],
            amount=r["amount"],
            cause=r["cause"],
            reward_id=r["reward_id"],
            conversion_id=r["conversion_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


# --- redemptions --------------------------------------------------------------------------------


async def claim_redemption(
    conn: asyncpg.Connection,
    *,
    redemption_id: str,
    tenant_id: str,
    holder_type: str,
    holder_id: str,
    idempotency_key: str,
    request_hash: str,
    amount: int,
    unit: str,
    reference: str | None,
    at: datetime,
) -> asyncpg.Record:
    """Inserts the redemption, or returns the one already made with this key (waiting for a
    concurrent request with the same key to commit or roll back first). `created` tells which."""
    row = await conn.fetchrow(
        """
        INSERT INTO redemptions (id, tenant_id, holder_type, holder_id, idempotency_key,
                                 request_hash, amount, unit, reference, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (tenant_id, holder_id, idempotency_key) DO NOTHING
        RETURNING *, true AS created
        """,
        redemption_id,
        tenant_id,
        holder_type,
        holder_id,
        idempotency_key,
        request_hash,
        amount,
        unit,
        reference,
        at,
    )
    if row is not None:
        return row
    existing = await conn.fetchrow(
        """
        SELECT *, false AS created FROM redemptions
        WHERE tenant_id = $1 AND holder_id = $2 AND idempotency_key = $3
        """,
        tenant_id,
        holder_id,
        idempotency_key,
    )
    assert existing is not None
    return existing


# --- coupons ------------------------------------------------------------------------------------


async def insert_coupon_pool(
    conn: asyncpg.Connection,
    pool_id: str,
    tenant_id: str,
    program_id: str,
    name: str,
    low_threshold: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO coupon_pools (id, tenant_id, program_id, name, low_threshold)
        VALUES ($1, $2, $3, $4, $5)
        """,
        pool_id,
        tenant_id,
        program_id,
        name,
        low_threshold,
    )


async def add_coupon_codes(conn: asyncpg.Connection, pool_id: str, codes: list[str]) -> int:
    """Adds codes not already in the pool; returns how many were new."""
    added: int = await conn.fetchval(
        """
        WITH added AS (
            INSERT INTO coupon_codes (pool_id, code)
            SELECT $1, c FROM unnest($2::text[]) AS c
            ON CONFLICT DO NOTHING RETURNING 1
        )
        SELECT count(*) FROM added
        """,
        pool_id,
        codes,
    )
    return added


async def coupon_pool(
    conn: asyncpg.Connection, tenant_id: str, pool_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT p.id, p.program_id, p.name, p.low_threshold, p.created_at,
               count(c.code) AS total, count(c.code) FILTER (WHERE c.reward_id IS NULL) AS remaining
        FROM coupon_pools p LEFT JOIN coupon_codes c ON c.pool_id = p.id
        WHERE p.id = $1 AND p.tenant_id = $2
        GROUP BY p.id
        """,
        pool_id,
        tenant_id,
    )


async def pick_coupon(conn: asyncpg.Connection, pool_id: str) -> str | None:
    """A free code of the pool, its row locked until the transaction ends.

    Allocations from one pool take turns on the pool's row, so the count of codes left (and the
    low-pool event it drives) is exact; SKIP LOCKED on the code rows keeps a code locked by any
    other writer from being handed out twice, and the unique reward_id makes a second code for
    the same reward impossible."""
    await conn.execute("SELECT 1 FROM coupon_pools WHERE id = $1 FOR UPDATE", pool_id)
    code: str | None = await conn.fetchval(
        """
        SELECT code FROM coupon_codes
        WHERE pool_id = $1 AND reward_id IS NULL
        ORDER BY created_at, code LIMIT 1
        FOR UPDATE SKIP LOCKED
        """,
        pool_id,
    )
    return code


async def assign_coupon(
    conn: asyncpg.Connection, pool_id: str, code: str, reward_id: str, holder_id: str, at: datetime
) -> tuple[int, int]:
    """Hands the picked code to the reward (reward_id is unique: one code per reward) and
    returns (codes still free, the pool's low threshold)."""
    await conn.execute(
        """
        UPDATE coupon_codes SET reward_id = $3, holder_id = $4, allocated_at = $5
        WHERE pool_id = $1 AND code = $2 AND reward_id IS NULL
        """,
        pool_id,
        code,
        reward_id,
        holder_id,
        at,
    )
    row = await conn.fetchrow(
        """
        SELECT p.low_threshold,
               (SELECT count(*) FROM coupon_codes WHERE pool_id = $1 AND reward_id IS NULL)
                   AS remaining
        FROM coupon_pools p WHERE p.id = $1
        """,
        pool_id,
    )
    assert row is not None
    return row["remaining"], row["low_threshold"]


async def coupon_of_reward(conn: asyncpg.Connection, reward_id: str) -> str | None:
    code: str | None = await conn.fetchval(
        "SELECT code FROM coupon_codes WHERE reward_id = $1", reward_id
    )
    return code


# --- payouts ------------------------------------------------------------------------------------


async def lock_cash_balances_over(
    conn: asyncpg.Connection, tenant_id: str, unit: str, threshold: int
) -> list[asyncpg.Record]:
    """Holders whose available cash in `unit` is at least `threshold`, their rows locked."""
    rows: list[asyncpg.Record] = await conn.fetch(
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
    return rows


async def insert_payout_batch(
    conn: asyncpg.Connection,
    batch_id: str,
    tenant_id: str,
    unit: str,
    threshold: int,
    at: datetime,
    lines: list[tuple[str, str, str, int]],
) -> None:
    """`lines` are (line id, holder type, holder id, amount)."""
    await conn.execute(
        """
        INSERT INTO payout_batches (id, tenant_id, unit, threshold, created_at)
        VALUES ($1, $2, $3, $4, $5)
        """,
        batch_id,
        tenant_id,
        unit,
        threshold,
        at,
    )
    await conn.executemany(
        """
        INSERT INTO payout_lines (id, batch_id, tenant_id, holder_type, holder_id, amount, unit,
                                  status, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
        """,
        [(lid, batch_id, tenant_id, ht, hid, amt, unit, at) for lid, ht, hid, amt in lines],
    )


async def payout_batch(
    conn: asyncpg.Connection, tenant_id: str, batch_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    batch = await conn.fetchrow(
        "SELECT * FROM payout_batches WHERE id = $1 AND tenant_id = $2", batch_id, tenant_id
    )
    if batch is None:
        return None
    lines = await conn.fetch("SELECT * FROM payout_lines WHERE batch_id = $1 ORDER BY id", batch_id)
    return batch, list(lines)


async def lock_payout_line(
    conn: asyncpg.Connection, tenant_id: str, batch_id: str, line_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        SELECT * FROM payout_lines WHERE id = $1 AND batch_id = $2 AND tenant_id = $3
        FOR UPDATE
        """,
        line_id,
        batch_id,
        tenant_id,
    )


async def settle_payout_line(
    conn: asyncpg.Connection,
    line_id: str,
    status: str,
    reference: str | None,
    reason: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        """
        UPDATE payout_lines SET status = $2, reference = $3, reason = $4, updated_at = $5
        WHERE id = $1 AND status = 'pending'
        """,
        line_id,
        status,
        reference,
        reason,
        at,
    )


# --- verify -------------------------------------------------------------------------------------


async def verify_problems(conn: asyncpg.Connection, tenant_id: str | None) -> dict[str, list[Any]]:
    """Each check's offending rows (empty lists when the ledger is sound); `tenant_id` None
    checks every tenant."""
    checks: dict[str, str] = {
        # Balance rows sum to zero per tenant, unit and purse.
        "units_sum_to_zero": """
            SELECT a.tenant_id, a.unit, a.purse, sum(b.balance) AS total
            FROM accounts a JOIN balances b ON b.account_id = a.id
            WHERE $1::text IS NULL OR a.tenant_id = $1
            GROUP BY a.tenant_id, a.unit, a.purse HAVING sum(b.balance) <> 0
        """,
        # Every balance row equals its account's entries (credits - debits).
        "balances_match_entries": """
            WITH entries AS (
                SELECT credit_account AS account_id, amount FROM transfers
                WHERE $1::text IS NULL OR tenant_id = $1
                UNION ALL
                SELECT debit_account, -amount FROM transfers
                WHERE $1::text IS NULL OR tenant_id = $1
            ), sums AS (SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id)
            SELECT a.id::text AS account_id, b.balance, coalesce(s.total, 0) AS entries
            FROM accounts a
            LEFT JOIN balances b ON b.account_id = a.id
            LEFT JOIN sums s ON s.account_id = a.id
            WHERE ($1::text IS NULL OR a.tenant_id = $1)
              AND (b.balance IS NULL OR b.balance <> coalesce(s.total, 0))
        """,
        # Every transfer has a cause on record: a reward for reward legs, a redemption or a
        # payout line for the others.
        "orphan_transfers": """
            SELECT t.id::text AS transfer_id, t.leg, t.cause FROM transfers t
            WHERE ($1::text IS NULL OR t.tenant_id = $1) AND (
                (t.leg IN ('earn', 'release', 'void', 'clawback', 'debt', 'settle')
                 AND t.reward_id IS NULL)
                OR (t.leg = 'redeem' AND NOT EXISTS (
                        SELECT 1 FROM redemptions r
                        WHERE r.id = t.cause AND r.tenant_id = t.tenant_id))
                OR (t.leg LIKE 'payout%' AND NOT EXISTS (
                        SELECT 1 FROM payout_lines p
                        WHERE p.id = t.cause AND p.tenant_id = t.tenant_id)))
        """,
        # A reward is earned once and released at most once, for the amounts it records.
        "double_posted": """
            SELECT t.reward_id, t.leg, count(*) AS postings FROM transfers t
            WHERE ($1::text IS NULL OR t.tenant_id = $1) AND t.leg IN ('earn', 'release')
            GROUP BY t.reward_id, t.leg HAVING count(*) > 1
        """,
        "rewards_match_transfers": """
            SELECT r.id AS reward_id, r.state, r.amount,
                   coalesce(sum(t.amount) FILTER (WHERE t.leg = 'earn'), 0) AS earned,
                   coalesce(sum(t.amount) FILTER (WHERE t.leg = 'void'), 0) AS voided,
                   coalesce(sum(t.amount) FILTER (WHERE t.leg IN ('clawback', 'debt')), 0)
                       AS clawed
            FROM rewards r
            LEFT JOIN transfers t ON t.reward_id = r.id
            LEFT JOIN accounts ca ON ca.id = t.credit_account
            WHERE ($1::text IS NULL OR r.tenant_id = $1) AND r.kind <> 'coupon'
            GROUP BY r.id
            HAVING coalesce(sum(t.amount) FILTER (WHERE t.leg = 'earn'), 0) <> r.amount
                OR coalesce(sum(t.amount) FILTER (WHERE t.leg = 'void'), 0) <> r.voided_amount
                OR coalesce(sum(t.amount) FILTER (WHERE t.leg IN ('clawback', 'debt')), 0)
                   <> r.clawed_back_amount
                OR (r.state = 'pending' AND count(t.id) FILTER (WHERE t.leg = 'release') > 0)
                -- an available reward reached the available account exactly once
                OR (r.state = 'available' AND r.amount > r.voided_amount
                    AND count(t.id) FILTER (WHERE t.leg = 'release'
                                               OR (t.leg = 'earn' AND ca.kind = 'available')) <> 1)
        """,
        # A redemption posted exactly its amount.
        "redemptions_match_transfers": """
            SELECT r.id, r.amount, coalesce(sum(t.amount), 0) AS posted
            FROM redemptions r
            LEFT JOIN transfers t ON t.cause = r.id AND t.tenant_id = r.tenant_id
                                  AND t.leg = 'redeem'
            WHERE $1::text IS NULL OR r.tenant_id = $1
            GROUP BY r.id HAVING coalesce(sum(t.amount), 0) <> r.amount
        """,
    }
    out: dict[str, list[Any]] = {}
    for name, sql in checks.items():
        rows = await conn.fetch(sql, tenant_id)
        out[name] = [{k: _plain(v) for k, v in dict(r).items()} for r in rows]
    return out


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID | datetime) else value


# --- release (set-based) ------------------------------------------------------------------------


async def holders_in_debt(
    conn: asyncpg.Connection, refs: list[ledger.AccountRef]
) -> dict[uuid.UUID, int]:
    """Of the given debt accounts, those owing something: account id -> amount owed (> 0)."""
    if not refs:
        return {}
    rows = await conn.fetch(
        """
        SELECT account_id, -balance AS owed FROM balances
        WHERE account_id = ANY($1::uuid[]) AND balance < 0
        ORDER BY account_id FOR UPDATE
        """,
        [r.id for r in refs],
    )
    return {r["account_id"]: r["owed"] for r in rows}

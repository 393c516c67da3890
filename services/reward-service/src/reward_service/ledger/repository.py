"""SQL of the ledger: posting transfers, balances, statements, verify. Functions take the
caller's connection: the edge owns the transaction; nothing here commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from reward_service.holders import HolderType
from reward_service.ledger import domain
from servicekit.pagination import Keyset, PageQuery, Where, fetch_page
from servicekit.sql import Params

_ACCOUNT = Params.typed(
    "id::uuid",
    "tenant_id::text",
    "holder_type::text",
    "holder_id::text",
    "kind::text",
    "unit::text",
    "purse::text",
)
_TRANSFER = _ACCOUNT.then_typed(
    "id::uuid",
    "tenant_id::text",
    "debit_account::uuid",
    "credit_account::uuid",
    "amount::bigint",
    "unit::text",
    "cause::text",
    "reward_id::text",
    "leg::text",
)
_DELTA = _TRANSFER.then_typed("account_id::uuid", "delta::bigint")

_POST = f"""
    WITH created AS (
        INSERT INTO accounts ({_ACCOUNT.listed()})
        SELECT * FROM unnest({_ACCOUNT.arrays()}) AS u({_ACCOUNT.listed()})
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = u.id)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), posted AS (
        INSERT INTO transfers ({_TRANSFER.listed()})
        SELECT * FROM unnest({_TRANSFER.arrays()})
        RETURNING 1
    )
    INSERT INTO balances (account_id, balance)
    SELECT d.account_id, d.delta
    FROM unnest({_DELTA.arrays()}) WITH ORDINALITY AS d(account_id, delta, n)
    ORDER BY d.n
    ON CONFLICT (account_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance
"""  # noqa: S608 - built from constant column lists


async def post_transfers(conn: asyncpg.Connection, transfers: Sequence[domain.Transfer]) -> None:
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
    deltas = domain.net_deltas(transfers)
    ordered = sorted(deltas)
    await conn.execute(
        _POST,
        [a.id for a in accounts],
        [a.tenant_id for a in accounts],
        [a.holder_type for a in accounts],
        [a.holder_id for a in accounts],
        [a.kind for a in accounts],
        [a.unit for a in accounts],
        [a.purse for a in accounts],
        [t.id for t in transfers],
        [t.tenant_id for t in transfers],
        [t.debit.id for t in transfers],
        [t.credit.id for t in transfers],
        [t.amount for t in transfers],
        [t.unit for t in transfers],
        [t.cause for t in transfers],
        [t.reward_id for t in transfers],
        [t.leg for t in transfers],
        ordered,
        [deltas[a] for a in ordered],
    )


async def lock_balance(conn: asyncpg.Connection, account: domain.AccountRef) -> int:
    """The account's balance, its row locked until the transaction ends (0 if it has none)."""
    balance: int | None = await conn.fetchval(
        "SELECT balance FROM balances WHERE account_id = $1 FOR UPDATE", account.id
    )
    return balance or 0


async def holders_in_debt(
    conn: asyncpg.Connection, refs: list[domain.AccountRef]
) -> dict[uuid.UUID, int]:
    """Of the given debt accounts, those owing something: account id -> amount owed (> 0),
    their balance rows locked."""
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
) -> HolderType | None:
    holder_type: HolderType | None = await conn.fetchval(
        """
        SELECT holder_type FROM accounts
        WHERE tenant_id = $1 AND holder_id = $2 AND holder_type <> 'program'
        ORDER BY holder_type LIMIT 1
        """,
        tenant_id,
        holder_id,
    )
    return holder_type


# A statement line is a transfer seen from one of the holder's accounts: a release between two
# of them shows twice under one seq, so a line's key is (seq, account kind), as text that sorts
# in posting order (`COLLATE "C"`: byte order, whatever the database's collation).
STATEMENT = Keyset(
    time=None, id="line_key", id_sql="(lpad(t.seq::text, 19, '0') || m.kind) COLLATE \"C\""
)


async def statement(
    conn: asyncpg.Connection, tenant_id: str, holder_id: str, page: PageQuery
) -> list[asyncpg.Record]:
    """A page of the holder's entries in posting order, each with its cause and (for reward
    legs) the conversion behind it (`domain.StatementLine`'s columns, and the page's key)."""
    where = Where().add(
        "m.tenant_id = {} AND m.holder_id = {} AND m.holder_type <> 'program'",
        tenant_id,
        holder_id,
    )
    return await fetch_page(
        conn,
        f"""
        SELECT t.seq, t.id AS transfer_id, t.leg, m.kind AS account_kind, m.unit, m.purse,
               CASE WHEN t.credit_account = m.id THEN t.amount ELSE -t.amount END AS amount,
               t.cause, t.reward_id, r.conversion_id, t.created_at,
               {STATEMENT.id_sql} AS line_key
        FROM accounts m
        JOIN transfers t ON t.credit_account = m.id OR t.debit_account = m.id
        LEFT JOIN rewards r ON r.id = t.reward_id
        """,  # noqa: S608 (the key expression is this module's constant)
        where,
        page,
        STATEMENT,
    )


# Each check's offending rows; `$1` is the tenant, or NULL for every tenant.
_CHECKS: dict[str, str] = {
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


async def verify_problems(conn: asyncpg.Connection, tenant_id: str | None) -> dict[str, list[Any]]:
    """Each check's offending rows (empty lists when the ledger is sound); `tenant_id` None
    checks every tenant."""
    out: dict[str, list[Any]] = {}
    for name, sql in _CHECKS.items():
        rows = await conn.fetch(sql, tenant_id)
        out[name] = [{k: _plain(v) for k, v in dict(r).items()} for r in rows]
    return out


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID | datetime) else value

"""SQL of the advocate's side: portal settings and the /v1/me read model (referrals, rewards,
redemptions, milestones) that attribution and reward events feed. Functions take the caller's
connection: the edge owns the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

# ---------------------------------------------------------------------------- settings


async def get_settings(conn: asyncpg.Connection, program_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM portal_settings WHERE program_id = $1", program_id)


async def put_settings(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    program_id: str,
    allowed_origins: Sequence[str],
    auto_enroll: str,
    cookie_days: int,
    reminder_max: int,
    reminder_interval_days: int,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        INSERT INTO portal_settings (program_id, tenant_id, allowed_origins, auto_enroll,
                                     cookie_days, reminder_max, reminder_interval_days)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (program_id) DO UPDATE
        SET allowed_origins = EXCLUDED.allowed_origins, auto_enroll = EXCLUDED.auto_enroll,
            cookie_days = EXCLUDED.cookie_days, reminder_max = EXCLUDED.reminder_max,
            reminder_interval_days = EXCLUDED.reminder_interval_days, updated_at = now()
        RETURNING *
        """,
        program_id,
        tenant_id,
        list(allowed_origins),
        auto_enroll,
        cookie_days,
        reminder_max,
        reminder_interval_days,
    )
    assert row is not None
    return row


async def origin_known(conn: asyncpg.Connection, origin: str) -> bool:
    known: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM portal_settings WHERE allowed_origins @> ARRAY[$1])", origin
    )
    return known


# ---------------------------------------------------------------------------- read model: writes


async def upsert_referral(
    conn: asyncpg.Connection,
    *,
    referral_id: str,
    tenant_id: str,
    advocate_id: str,
    friend_label: str,
    at: datetime,
    relabel: bool,
) -> None:
    """`relabel`: an existing referral takes this label (the referral event knows the email,
    a conversion alone does not)."""
    await conn.execute(
        """
        INSERT INTO portal_referrals (referral_id, tenant_id, advocate_id, friend_label,
                                      created_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (referral_id) DO UPDATE
        SET friend_label = CASE WHEN $6 THEN EXCLUDED.friend_label
                                ELSE portal_referrals.friend_label END
        """,
        referral_id,
        tenant_id,
        advocate_id,
        friend_label,
        at,
        relabel,
    )


async def link_conversion(conn: asyncpg.Connection, conversion_id: str, referral_id: str) -> None:
    await conn.execute(
        "INSERT INTO portal_conversions VALUES ($1, $2) ON CONFLICT DO NOTHING",
        conversion_id,
        referral_id,
    )


_FLAGS = frozenset({"signed_up", "purchased", "rewarded", "refunded"})


async def mark_referral(conn: asyncpg.Connection, referral_id: str, flag: str) -> None:
    """Sets one of signed_up / purchased / rewarded / refunded on the referral."""
    assert flag in _FLAGS
    await conn.execute(
        f"UPDATE portal_referrals SET {flag} = true, updated_at = now() WHERE referral_id = $1",  # noqa: S608
        referral_id,
    )


async def mark_referral_of(conn: asyncpg.Connection, conversion_id: str, flag: str) -> None:
    """As mark_referral, for the referral a conversion belongs to (if known yet)."""
    assert flag in _FLAGS
    await conn.execute(
        f"""
        UPDATE portal_referrals SET {flag} = true, updated_at = now()
        WHERE referral_id = (SELECT referral_id FROM portal_conversions WHERE conversion_id = $1)
        """,  # noqa: S608
        conversion_id,
    )


async def settle_rewarded(conn: asyncpg.Connection, referral_id: str, conversion_id: str) -> None:
    """Reward and attribution events come on two topics: a reward that arrived before its
    conversion marks the referral once the conversion is known."""
    await conn.execute(
        """
        UPDATE portal_referrals SET rewarded = true, updated_at = now()
        WHERE referral_id = $1 AND NOT rewarded AND EXISTS (
            SELECT 1 FROM portal_rewards WHERE conversion_id = $2 AND state <> 'voided')
        """,
        referral_id,
        conversion_id,
    )


async def upsert_reward(
    conn: asyncpg.Connection,
    *,
    reward_id: str,
    advocate_id: str,
    conversion_id: str | None,
    unit: str,
    amount: int,
    state: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO portal_rewards (reward_id, advocate_id, conversion_id, unit, amount, state)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (reward_id) DO UPDATE SET amount = EXCLUDED.amount, state = EXCLUDED.state
        """,
        reward_id,
        advocate_id,
        conversion_id,
        unit,
        amount,
        state,
    )


async def reduce_reward(conn: asyncpg.Connection, reward_id: str, by: int) -> None:
    await conn.execute(
        "UPDATE portal_rewards SET amount = amount - $2 WHERE reward_id = $1", reward_id, by
    )


async def insert_redemption(
    conn: asyncpg.Connection, *, redemption_id: str, advocate_id: str, unit: str, amount: int
) -> None:
    await conn.execute(
        "INSERT INTO portal_redemptions VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        redemption_id,
        advocate_id,
        unit,
        amount,
    )


async def set_milestone(
    conn: asyncpg.Connection, advocate_id: str, referral_count: int, milestone: int
) -> None:
    await conn.execute(
        """
        INSERT INTO portal_milestones VALUES ($1, $2, $3)
        ON CONFLICT (advocate_id) DO UPDATE
        SET referral_count = GREATEST(portal_milestones.referral_count, EXCLUDED.referral_count),
            milestone = GREATEST(portal_milestones.milestone, EXCLUDED.milestone)
        """,
        advocate_id,
        referral_count,
        milestone,
    )


async def set_referred_by(conn: asyncpg.Connection, advocate_id: str, referred_by: str) -> None:
    await conn.execute(
        "UPDATE advocates SET referred_by = $2 WHERE id = $1 AND referred_by IS NULL",
        advocate_id,
        referred_by,
    )


# ---------------------------------------------------------------------------- read model: reads


async def advocate_page(
    conn: asyncpg.Connection, tenant_id: str, advocate_id: str, referrals_shown: int
) -> asyncpg.Record | None:
    """Everything GET /v1/me shows, in one statement (the hot path's one round trip): the
    advocate of this tenant (None if there is none), their current code, their program (as
    `program_*`; its share templates as JSON text), and the read model: counted clicks,
    referral counts, rewards per unit (`reward_units`, `pending`, `available`, `redeemed`:
    arrays in unit order), the latest referrals (`friends`, `signed_up`, `purchased_each`,
    `rewarded`, `refunded`, `since`: arrays, newest first), the last milestone and the
    program's allowed origins. Lists come as parallel arrays, which both ends handle in
    binary, rather than JSON documents Postgres builds and the client parses."""
    return await conn.fetchrow(
        """
        WITH h AS (
            SELECT a.id, a.program_id, a.name, a.locale, c.code, p.name AS program_name,
                   p.default_locale AS program_default_locale,
                   p.share_templates::text AS program_share_templates
            FROM advocates a
            JOIN codes c ON c.advocate_id = a.id AND c.current
            JOIN programs p ON p.id = a.program_id
            WHERE a.id = $1 AND a.tenant_id = $2
        ), refs AS (
            SELECT * FROM portal_referrals WHERE advocate_id = $1
        ), latest AS (
            SELECT * FROM refs ORDER BY created_at DESC, referral_id LIMIT $3
        ), r AS (
            SELECT unit,
                   sum(amount) FILTER (WHERE state = 'pending') AS pending,
                   sum(amount) FILTER (WHERE state = 'available') AS earned
            FROM portal_rewards WHERE advocate_id = $1 GROUP BY unit
        ), d AS (
            SELECT unit, sum(amount) AS redeemed
            FROM portal_redemptions WHERE advocate_id = $1 GROUP BY unit
        ), u AS (
            SELECT coalesce(r.unit, d.unit) AS unit,
                   coalesce(r.pending, 0)::bigint AS pending,
                   (coalesce(r.earned, 0) - coalesce(d.redeemed, 0))::bigint AS available,
                   coalesce(d.redeemed, 0)::bigint AS redeemed
            FROM r FULL JOIN d ON r.unit = d.unit
        )
        SELECT h.*,
            (SELECT count(*) FROM clicks
             WHERE advocate_id = $1 AND counts AND NOT is_bot)
              + (SELECT coalesce(sum(counted), 0) FROM click_days WHERE advocate_id = $1)
                AS clicks,
            (SELECT count(*) FROM refs) AS joined,
            (SELECT count(*) FROM refs WHERE purchased) AS purchased,
            (SELECT count(*) FROM refs WHERE rewarded AND NOT refunded) AS successful,
            w.*, x.*,
            (SELECT milestone FROM portal_milestones WHERE advocate_id = $1) AS milestone,
            (SELECT allowed_origins FROM portal_settings s WHERE s.program_id = h.program_id)
                AS allowed_origins
        FROM h
        CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(unit ORDER BY unit), '{}') AS reward_units,
                   coalesce(array_agg(pending ORDER BY unit), '{}') AS pending,
                   coalesce(array_agg(available ORDER BY unit), '{}') AS available,
                   coalesce(array_agg(redeemed ORDER BY unit), '{}') AS redeemed
            FROM u
        ) w
        CROSS JOIN LATERAL (
            SELECT
                coalesce(array_agg(friend_label ORDER BY created_at DESC, referral_id), '{}')
                    AS friends,
                coalesce(array_agg(signed_up ORDER BY created_at DESC, referral_id), '{}')
                    AS signed_up,
                coalesce(array_agg(purchased ORDER BY created_at DESC, referral_id), '{}')
                    AS purchased_each,
                coalesce(array_agg(rewarded ORDER BY created_at DESC, referral_id), '{}')
                    AS rewarded,
                coalesce(array_agg(refunded ORDER BY created_at DESC, referral_id), '{}')
                    AS refunded,
                coalesce(array_agg(created_at ORDER BY created_at DESC, referral_id), '{}')
                    AS since
            FROM latest
        ) x
        """,
        advocate_id,
        tenant_id,
        referrals_shown,
    )


# ---------------------------------------------------------------------------- reminders


async def schedule_reminders(conn: asyncpg.Connection, limit: int) -> int:
    """Puts advocates of programs that send reminders on the schedule (set-wise, at most
    `limit`): those with marketing consent, not blocked, enrolled recently enough that a
    reminder is still ahead of them. The first is due one interval after enrolling."""
    status: str = await conn.execute(
        """
        INSERT INTO portal_reminders (advocate_id, tenant_id, program_id, due_at)
        SELECT a.id, a.tenant_id, a.program_id,
               a.created_at + make_interval(days => s.reminder_interval_days)
        FROM portal_settings s
        JOIN advocates a ON a.program_id = s.program_id
        WHERE s.reminder_max > 0 AND a.marketing_consent AND NOT a.blocked
          AND a.created_at > now() - make_interval(
                  days => s.reminder_interval_days * s.reminder_max)
          AND NOT EXISTS (SELECT 1 FROM portal_reminders r WHERE r.advocate_id = a.id)
        LIMIT $1
        ON CONFLICT (advocate_id) DO NOTHING
        """,
        limit,
    )
    return int(status.rsplit(" ", 1)[1])


async def claim_due_reminders(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Due reminders with what decides them, locked for this transaction (SKIP LOCKED: another
    replica takes others)."""
    return list(
        await conn.fetch(
            """
            SELECT r.advocate_id, r.tenant_id, r.program_id, r.sent, r.due_at,
                   a.marketing_consent, a.blocked, s.reminder_max, s.reminder_interval_days,
                   c.code,
                   (EXISTS (SELECT 1 FROM clicks k
                            WHERE k.advocate_id = r.advocate_id AND NOT k.is_bot)
                    OR EXISTS (SELECT 1 FROM click_days k
                               WHERE k.advocate_id = r.advocate_id AND k.human > 0)) AS shared
            FROM portal_reminders r
            JOIN advocates a ON a.id = r.advocate_id
            JOIN portal_settings s ON s.program_id = r.program_id
            JOIN codes c ON c.advocate_id = r.advocate_id AND c.current
            WHERE NOT r.done AND r.due_at <= $1
            ORDER BY r.due_at
            LIMIT $2
            FOR UPDATE OF r SKIP LOCKED
            """,
            now,
            limit,
        )
    )


async def advance_reminder(
    conn: asyncpg.Connection, advocate_id: str, *, sent: int, due_at: datetime, done: bool
) -> None:
    await conn.execute(
        "UPDATE portal_reminders SET sent = $2, due_at = $3, done = $4 WHERE advocate_id = $1",
        advocate_id,
        sent,
        due_at,
        done,
    )

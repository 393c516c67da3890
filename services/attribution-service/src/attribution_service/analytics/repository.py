"""All SQL of the analytics read models. Every fold commutes (counters add, sets gain members,
times move to the earliest, issued amounts to the largest), so events arriving in any order
leave the same rows. Functions take the caller's connection; nothing commits."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from attribution_service.analytics.domain import tie_block
from attribution_service.analytics.folds import Folds, ScoreKey, score_moves
from servicekit.sql import columns_of

# --- folds: a run's merged changes (folds.Folds), one statement per read model ----------------
# Rows go in key order, so two transactions folding overlapping runs lock shared rows in the
# same order (no deadlock between the click consumer and the own-events worker).


async def apply_folds(conn: asyncpg.Connection, f: Folds) -> None:
    if f.programs:
        keys = sorted(f.programs)
        await conn.execute(
            """
            INSERT INTO analytics_programs (program_id, tenant_id)
            SELECT * FROM unnest($1::text[], $2::text[])
            ON CONFLICT (program_id) DO NOTHING
            """,
            keys,
            [f.programs[k] for k in keys],
        )
    if f.counters:
        counters = sorted(f.counters.items())
        await conn.execute(
            """
            INSERT INTO analytics_counters
                (tenant_id, program_id, day, channel, metric, unit, value)
            SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[],
                                 $6::text[], $7::bigint[])
            ON CONFLICT (program_id, day, channel, metric, unit)
            DO UPDATE SET value = analytics_counters.value + EXCLUDED.value
            """,
            [f.tenants[k[0]] for k, _ in counters],
            *columns_of([(*k, v) for k, v in counters], 6),
        )
    if f.advocate_counters:
        await conn.execute(
            """
            INSERT INTO analytics_advocate_counters
                (program_id, advocate_id, day, metric, unit, value)
            SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[],
                                 $6::bigint[])
            ON CONFLICT (program_id, advocate_id, day, metric, unit)
            DO UPDATE SET value = analytics_advocate_counters.value + EXCLUDED.value
            """,
            *columns_of([(*k, v) for k, v in sorted(f.advocate_counters.items())], 6),
        )
    if f.members:
        await conn.execute(
            """
            INSERT INTO analytics_members (program_id, kind, day, channel, member)
            SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::text[])
            ON CONFLICT DO NOTHING
            """,
            *columns_of(sorted(f.members), 5),
        )
    if f.advocates:
        rows = sorted(f.advocates.items())
        await conn.execute(
            """
            INSERT INTO analytics_advocates
                (advocate_id, tenant_id, program_id, display_name, enrolled_at, first_referral_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::timestamptz[], $6::timestamptz[])
            ON CONFLICT (advocate_id) DO UPDATE SET
                display_name = coalesce(EXCLUDED.display_name, analytics_advocates.display_name),
                enrolled_at = LEAST(analytics_advocates.enrolled_at, EXCLUDED.enrolled_at),
                first_referral_at =
                    LEAST(analytics_advocates.first_referral_at, EXCLUDED.first_referral_at)
            -- most folds change nothing here (an advocate's later referrals): no new row version
            WHERE (analytics_advocates.display_name, analytics_advocates.enrolled_at,
                   analytics_advocates.first_referral_at)
                IS DISTINCT FROM
                  (coalesce(EXCLUDED.display_name, analytics_advocates.display_name),
                   LEAST(analytics_advocates.enrolled_at, EXCLUDED.enrolled_at),
                   LEAST(analytics_advocates.first_referral_at, EXCLUDED.first_referral_at))
            """,
            *columns_of(
                [
                    (a, r.tenant_id, r.program_id, r.display_name, r.enrolled_at,
                     r.first_referral_at)
                    for a, r in rows
                ],
                6,
            ),
        )  # fmt: skip
    if f.referrals:
        refs = sorted(f.referrals.items())
        await conn.execute(
            """
            INSERT INTO analytics_referrals
                (program_id, friend_customer_id, advocate_id, referred_at, first_purchase_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                 $5::timestamptz[])
            ON CONFLICT (program_id, friend_customer_id) DO UPDATE SET
                referred_at = LEAST(analytics_referrals.referred_at, EXCLUDED.referred_at),
                first_purchase_at =
                    LEAST(analytics_referrals.first_purchase_at, EXCLUDED.first_purchase_at)
            WHERE (analytics_referrals.referred_at, analytics_referrals.first_purchase_at)
                IS DISTINCT FROM
                  (LEAST(analytics_referrals.referred_at, EXCLUDED.referred_at),
                   LEAST(analytics_referrals.first_purchase_at, EXCLUDED.first_purchase_at))
            """,
            *columns_of(
                [(p, c, r.advocate_id, r.referred_at, r.first_purchase_at) for (p, c), r in refs],
                5,
            ),
        )
    if f.scores:
        await _apply_scores(conn, f.scores)


async def _apply_scores(conn: asyncpg.Connection, scores: dict[ScoreKey, int]) -> None:
    """Moves each advocate's score in each period by its delta, and the counts of advocates per
    score (and per score and block) from the old score to the new one."""
    keys = sorted(scores)
    # The score before is the one after less the delta, for a row that was there (the upsert
    # updated it: xmax holds this transaction's lock); a row inserted had none. No read ahead:
    # the upsert's row lock is the one a SELECT ... FOR UPDATE took before.
    new = await conn.fetch(
        """
        INSERT INTO analytics_leaderboard (program_id, metric, period, advocate_id, score)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
        ON CONFLICT (program_id, metric, period, advocate_id)
        DO UPDATE SET score = analytics_leaderboard.score + EXCLUDED.score
        RETURNING program_id, metric, period, advocate_id, score, xmax = 0 AS inserted
        """,
        *columns_of(keys, 4),
        [scores[k] for k in keys],
    )
    old = [r for r in new if not r["inserted"]]
    moves = score_moves(
        {(k := (r[0], r[1], r[2], r[3])): r[4] - scores[k] for r in old},
        {(r[0], r[1], r[2], r[3]): r[4] for r in new},
        {k[3]: tie_block(k[3]) for k in keys},
    )
    rows = sorted((*k, n) for k, n in moves.items())
    await conn.execute(
        """
        INSERT INTO analytics_leaderboard_counts
            (program_id, metric, period, score, block, advocates)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                             $6::bigint[])
        ON CONFLICT (program_id, metric, period, block, score)
        DO UPDATE SET advocates = analytics_leaderboard_counts.advocates + EXCLUDED.advocates
        """,
        *columns_of(rows, 6),
    )


async def issue_reward(
    conn: asyncpg.Connection, reward_id: str, program_id: str, unit: str, day: date, amount: int
) -> tuple[date | None, int, date, int]:
    """The reward's issued (day, amount) before and after this event: the earliest day and the
    largest amount seen."""
    # Two statements: a CTE reading the row would run after the upsert changed it. A reward's
    # events share its advocate's partition, so one consumer folds them one at a time.
    old = await conn.fetchrow(
        "SELECT day, issued FROM analytics_rewards WHERE reward_id = $1 FOR UPDATE", reward_id
    )
    row = await conn.fetchrow(
        """
        INSERT INTO analytics_rewards (reward_id, program_id, unit, day, issued)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (reward_id) DO UPDATE SET
            day = LEAST(analytics_rewards.day, EXCLUDED.day),
            issued = GREATEST(analytics_rewards.issued, EXCLUDED.issued)
        RETURNING day, issued
        """,
        reward_id,
        program_id,
        unit,
        day,
        amount,
    )
    assert row is not None
    if old is None:
        return None, 0, row["day"], row["issued"]
    return old["day"], old["issued"], row["day"], row["issued"]


# --- queries ---------------------------------------------------------------------------------


async def advocate_figures(
    conn: asyncpg.Connection, program_id: str, advocate_id: str, start: date, end: date
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT metric, unit, sum(value)::bigint AS value FROM analytics_advocate_counters
        WHERE program_id = $1 AND advocate_id = $2 AND day BETWEEN $3 AND $4
        GROUP BY metric, unit
        """,
        program_id,
        advocate_id,
        start,
        end,
    )
    return rows


async def advocate(
    conn: asyncpg.Connection, program_id: str, advocate_id: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM analytics_advocates WHERE advocate_id = $1 AND program_id = $2",
        advocate_id,
        program_id,
    )
    return row


async def program_tenant(conn: asyncpg.Connection, program_id: str) -> str | None:
    tenant: str | None = await conn.fetchval(
        "SELECT tenant_id FROM analytics_programs WHERE program_id = $1", program_id
    )
    return tenant


async def counters(
    conn: asyncpg.Connection,
    tenant_id: str,
    program_id: str,
    start: date,
    end: date,
    interval: str,
    channel: str | None,
) -> list[asyncpg.Record]:
    """Sums per bucket, metric and unit (the whole range as bucket NULL, by GROUPING SETS)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT date_trunc($5, day)::date AS bucket, metric, unit, sum(value)::bigint AS value
        FROM analytics_counters
        WHERE tenant_id = $1 AND program_id = $2 AND day BETWEEN $3 AND $4
          AND ($6::text IS NULL OR channel = $6)
        GROUP BY GROUPING SETS ((date_trunc($5, day)::date, metric, unit), (metric, unit))
        """,
        tenant_id,
        program_id,
        start,
        end,
        interval,
        channel,
    )
    return rows


async def members(
    conn: asyncpg.Connection,
    program_id: str,
    start: date,
    end: date,
    interval: str,
    channel: str | None,
) -> list[asyncpg.Record]:
    """Distinct members per bucket and kind (the whole range as bucket NULL)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT date_trunc($4, day)::date AS bucket, kind, count(DISTINCT member) AS value
        FROM analytics_members
        WHERE program_id = $1 AND day BETWEEN $2 AND $3 AND ($5::text IS NULL OR channel = $5)
        GROUP BY GROUPING SETS ((date_trunc($4, day)::date, kind), (kind))
        """,
        program_id,
        start,
        end,
        interval,
        channel,
    )
    return rows


async def channels(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, start: date, end: date
) -> list[asyncpg.Record]:
    """Per channel over the range: human clicks, bot clicks, unique visitors, sharers."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        WITH c AS (
            SELECT channel, metric, sum(value)::bigint AS value FROM analytics_counters
            WHERE tenant_id = $1 AND program_id = $2 AND day BETWEEN $3 AND $4
              AND metric IN ('clicks', 'bot_clicks') AND channel <> ''
            GROUP BY channel, metric
        ), m AS (
            SELECT channel, kind AS metric, count(DISTINCT member) AS value
            FROM analytics_members
            WHERE program_id = $2 AND day BETWEEN $3 AND $4 AND channel <> ''
            GROUP BY channel, kind
        )
        SELECT channel, metric, value FROM c UNION ALL SELECT channel, metric, value FROM m
        """,
        tenant_id,
        program_id,
        start,
        end,
    )
    return rows


async def cycle_times(
    conn: asyncpg.Connection, program_id: str, start: date, end: date, interval: str, tz: str
) -> list[asyncpg.Record]:
    """Median seconds from an advocate's enrollment to their referred friend's first purchase,
    per bucket of the purchase day (the whole range as bucket NULL)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT date_trunc($4, (r.first_purchase_at AT TIME ZONE $5)::date)::date AS bucket,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM r.first_purchase_at - a.enrolled_at)
               ) AS median_seconds,
               count(*) AS n
        FROM analytics_referrals r JOIN analytics_advocates a USING (advocate_id)
        WHERE r.program_id = $1 AND a.enrolled_at IS NOT NULL
          AND (r.first_purchase_at AT TIME ZONE $5)::date BETWEEN $2 AND $3
        GROUP BY GROUPING SETS (
            (date_trunc($4, (r.first_purchase_at AT TIME ZONE $5)::date)::date), ())
        """,
        program_id,
        start,
        end,
        interval,
        tz,
    )
    return rows


async def cohorts(
    conn: asyncpg.Connection, program_id: str, start: date, end: date, tz: str
) -> list[asyncpg.Record]:
    """Per enrollment week: advocates, and how many first referred someone within 7/30/90
    days of enrolling."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT date_trunc('week', (enrolled_at AT TIME ZONE $4)::date)::date AS week,
               count(*) AS advocates,
               count(*) FILTER (WHERE first_referral_at < enrolled_at + interval '7 days')
                   AS within_7,
               count(*) FILTER (WHERE first_referral_at < enrolled_at + interval '30 days')
                   AS within_30,
               count(*) FILTER (WHERE first_referral_at < enrolled_at + interval '90 days')
                   AS within_90
        FROM analytics_advocates
        WHERE program_id = $1 AND (enrolled_at AT TIME ZONE $4)::date BETWEEN $2 AND $3
        GROUP BY 1 ORDER BY 1
        """,
        program_id,
        start,
        end,
        tz,
    )
    return rows


async def top(
    conn: asyncpg.Connection, program_id: str, metric: str, period: str, limit: int
) -> list[asyncpg.Record]:
    """The first `limit` of the index: score descending, ties by advocate id."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT l.advocate_id, l.score, a.display_name
        FROM analytics_leaderboard l
        LEFT JOIN analytics_advocates a ON a.advocate_id = l.advocate_id
        WHERE l.program_id = $1 AND l.metric = $2 AND l.period = $3
        ORDER BY l.score DESC, l.advocate_id
        LIMIT $4
        """,
        program_id,
        metric,
        period,
        limit,
    )
    return rows


async def rank(
    conn: asyncpg.Connection,
    program_id: str,
    metric: str,
    period: str,
    advocate_id: str,
    block: str,
) -> asyncpg.Record | None:
    """One advocate's score and rank: 1 + the advocates ahead (a higher score, or the same
    score and a smaller id), summed from the counts per score and per block, and counted on the
    index only inside the advocate's own block."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT me.score, a.display_name,
               1 + (SELECT coalesce(sum(c.advocates), 0) FROM analytics_leaderboard_counts c
                    WHERE c.program_id = $1 AND c.metric = $2 AND c.period = $3
                      AND c.block = '' AND c.score > me.score)
                 + (SELECT coalesce(sum(c.advocates), 0) FROM analytics_leaderboard_counts c
                    WHERE c.program_id = $1 AND c.metric = $2 AND c.period = $3
                      AND c.score = me.score AND c.block <> '' AND c.block < $5)
                 + (SELECT count(*) FROM analytics_leaderboard o
                    WHERE o.program_id = $1 AND o.metric = $2 AND o.period = $3
                      AND o.score = me.score
                      AND o.advocate_id >= $5 AND o.advocate_id < me.advocate_id) AS rank
        FROM analytics_leaderboard me
        LEFT JOIN analytics_advocates a ON a.advocate_id = me.advocate_id
        WHERE me.program_id = $1 AND me.metric = $2 AND me.period = $3 AND me.advocate_id = $4
        """,
        program_id,
        metric,
        period,
        advocate_id,
        block,
    )
    return row


# --- customers (every purchase, referred or not) -----------------------------------------------


async def record_purchases(
    conn: asyncpg.Connection,
    customers: list[tuple[str, str, str | None, datetime, datetime]],
    days: list[tuple[str, str, str, date, int, int]],
) -> None:
    """Customers (tenant, customer, referring program, first, last purchase) and their
    purchases per day (tenant, customer, currency, day, purchases, revenue), each key once; one
    statement (it runs in every conversions group commit: a round trip saved is latency there)."""
    await conn.execute(
        """
        WITH customers AS (
            INSERT INTO analytics_customers
                (tenant_id, customer_id, referred_program_id, first_purchase_at,
                 last_purchase_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                 $5::timestamptz[])
            ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
                referred_program_id =
                    LEAST(analytics_customers.referred_program_id, EXCLUDED.referred_program_id),
                first_purchase_at =
                    LEAST(analytics_customers.first_purchase_at, EXCLUDED.first_purchase_at),
                last_purchase_at =
                    GREATEST(analytics_customers.last_purchase_at, EXCLUDED.last_purchase_at)
            WHERE (analytics_customers.referred_program_id, analytics_customers.first_purchase_at,
                   analytics_customers.last_purchase_at)
                IS DISTINCT FROM
                  (LEAST(analytics_customers.referred_program_id, EXCLUDED.referred_program_id),
                   LEAST(analytics_customers.first_purchase_at, EXCLUDED.first_purchase_at),
                   GREATEST(analytics_customers.last_purchase_at, EXCLUDED.last_purchase_at))
        )
        INSERT INTO analytics_customer_days
            (tenant_id, customer_id, currency, day, purchases, revenue_minor)
        SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::date[], $10::bigint[],
                             $11::bigint[])
        ON CONFLICT (tenant_id, day, customer_id, currency) DO UPDATE SET
            purchases = analytics_customer_days.purchases + EXCLUDED.purchases,
            revenue_minor = analytics_customer_days.revenue_minor + EXCLUDED.revenue_minor
        """,
        *columns_of(customers, 5),
        *columns_of(days, 6),
    )


async def customer_groups(
    conn: asyncpg.Connection, tenant_id: str, program_id: str, start: date, end: date, tz: str
) -> list[asyncpg.Record]:
    """Per group (customers the program referred; the tenant's never-referred customers),
    currency and, for the referred, cohort (the ISO week, in `tz`, their advocate enrolled; null
    while their referral or the advocate's enrollment is not folded yet), of the customers who
    bought in the window:
    customers, purchases, revenue, and the sum of their lifespans in seconds (first to last
    purchase ever seen; numeric, exact). The cohorts of a currency add up to its referred
    group (each referred customer has one advocate in the program)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        WITH per AS (
            SELECT d.customer_id, d.currency, sum(d.purchases) AS purchases,
                   sum(d.revenue_minor) AS revenue, min(c.referred_program_id) AS program_id,
                   min(extract(epoch FROM c.last_purchase_at - c.first_purchase_at))
                       AS lifespan_seconds
            FROM analytics_customer_days d
            JOIN analytics_customers c USING (tenant_id, customer_id)
            WHERE d.tenant_id = $1 AND d.day BETWEEN $3 AND $4
            GROUP BY d.customer_id, d.currency
        )
        SELECT per.program_id IS NOT NULL AS referred, per.currency,
               date_trunc('week', (a.enrolled_at AT TIME ZONE $5)::date)::date AS cohort,
               count(*) AS customers, sum(per.purchases)::bigint AS purchases,
               sum(per.revenue)::bigint AS revenue_minor,
               sum(per.lifespan_seconds)::numeric AS lifespan_seconds
        FROM per
        LEFT JOIN analytics_referrals r
            ON per.program_id IS NOT NULL AND r.program_id = $2
           AND r.friend_customer_id = per.customer_id
        LEFT JOIN analytics_advocates a ON a.advocate_id = r.advocate_id
        WHERE per.program_id IS NULL OR per.program_id = $2
        GROUP BY 1, 2, 3
        ORDER BY 2, 3 NULLS LAST
        """,
        tenant_id,
        program_id,
        start,
        end,
        tz,
    )
    return rows


# --- this service's own events, folded from its outbox -----------------------------------------


async def take_outboxed(conn: asyncpg.Connection, topic: str, limit: int) -> list[bytes]:
    """The payloads of the next `limit` outbox rows for `topic` past the fold cursor, in
    (transaction id, seq) order, and the cursor moved past them in the caller's transaction
    (which folds them). Only rows of transactions older than every running one are read: a
    transaction still running may yet commit rows that sort before later ones."""
    cursor = await conn.fetchrow(
        "SELECT xid::text AS xid, seq FROM analytics_fold_cursor FOR UPDATE"
    )
    assert cursor is not None  # the migration wrote it
    # The order is the table's columns' (o.xid: an xid8), on their index: ORDER BY the output
    # name `xid` would sort its text, where "10000" comes before "9999" (events skipped once
    # transaction ids gain a digit), and read and sort the whole outbox each time.
    rows = await conn.fetch(
        """
        SELECT o.xid::text AS xid, o.seq, o.topic, o.payload FROM outbox o
        WHERE (o.xid, o.seq) > ($1::text::xid8, $2::bigint)
          AND o.xid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY o.xid, o.seq
        LIMIT $3
        """,
        cursor["xid"],
        cursor["seq"],
        limit,
    )
    if not rows:
        return []
    await conn.execute(
        "UPDATE analytics_fold_cursor SET xid = $1::text::xid8, seq = $2",
        rows[-1]["xid"],
        rows[-1]["seq"],
    )
    return [bytes(r["payload"]) for r in rows if r["topic"] == topic]


async def unfolded(conn: asyncpg.Connection) -> int:
    """Outbox rows the folds have not read yet, and events still waiting from before they
    read the outbox (analytics_emitted)."""
    n: int = await conn.fetchval(
        """
        SELECT (SELECT count(*) FROM outbox o, analytics_fold_cursor c
                WHERE (o.xid, o.seq) > (c.xid, c.seq))
             + (SELECT count(*) FROM analytics_emitted)
        """
    )
    return n


async def take_emitted(conn: asyncpg.Connection, limit: int) -> list[str]:
    """Events kept for the folds before they read the outbox (migration 0017), oldest first,
    removed in the caller's transaction (which folds them)."""
    rows = await conn.fetch(
        """
        DELETE FROM analytics_emitted WHERE event_id IN (
            SELECT event_id FROM analytics_emitted ORDER BY created_at
            LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING payload
        """,
        limit,
    )
    return [r["payload"] for r in rows]

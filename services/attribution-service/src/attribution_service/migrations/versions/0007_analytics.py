"""analytics read models (issue #22): counters per program, day and channel; distinct-member
sets; per-advocate, per-referral and per-reward rows; the leaderboard index

Revision ID: 0007
"""

from alembic import op

revision = "0007"
# The lead's plan puts 0006 (API keys copy) and maybe 0007 before this one; neither is on this
# branch yet, so it follows 0005 here and the chain is set when they are merged.
down_revision = "0006"

# Every table is a fold of consumed events whose result does not depend on the order they
# arrive in: counters only add, sets only gain members, times only move to the earliest
# (LEAST), amounts to the largest (GREATEST). The inbox row of each event is written in the same
# transaction, so a redelivered event folds nothing twice.


def upgrade() -> None:
    op.execute(
        """
        -- Which tenant a program belongs to (link.events), for the 404 of another tenant's.
        -- time_zone: the day aggregates are kept in; link-service's programs carry none yet, so
        -- every program is 'UTC' until they do.
        CREATE TABLE analytics_programs (
            program_id text PRIMARY KEY,
            tenant_id  text NOT NULL,
            time_zone  text NOT NULL DEFAULT 'UTC'
        );

        -- Additive figures: clicks, signups, first purchases, revenue and refunds per currency,
        -- reward cost per unit. channel '' where the fact has none.
        CREATE TABLE analytics_counters (
            tenant_id  text NOT NULL,
            program_id text NOT NULL,
            day        date NOT NULL,
            channel    text NOT NULL DEFAULT '',
            metric     text NOT NULL,
            unit       text NOT NULL DEFAULT '',
            value      bigint NOT NULL,
            PRIMARY KEY (program_id, day, channel, metric, unit)
        );

        -- The same additive figures per advocate (clicks, referrals, signups, first purchases,
        -- revenue and rewards earned per unit), for one advocate's figures.
        CREATE TABLE analytics_advocate_counters (
            program_id  text NOT NULL,
            advocate_id text COLLATE "C" NOT NULL,
            day         date NOT NULL,
            metric      text NOT NULL,
            unit        text NOT NULL DEFAULT '',
            value       bigint NOT NULL,
            PRIMARY KEY (program_id, advocate_id, day, metric, unit)
        );

        -- Distinct figures (unique visitors, advocates who shared, issued rewards): a set per
        -- day; a bucket's figure is COUNT(DISTINCT member) over its days.
        CREATE TABLE analytics_members (
            program_id text NOT NULL,
            kind       text NOT NULL,
            day        date NOT NULL,
            channel    text NOT NULL DEFAULT '',
            member     text NOT NULL,
            PRIMARY KEY (program_id, kind, day, channel, member)
        );

        -- One advocate: the masked display name (never the name or email itself), when they
        -- enrolled, when they first referred someone (cohorts, cycle time).
        CREATE TABLE analytics_advocates (
            advocate_id       text COLLATE "C" PRIMARY KEY,
            tenant_id         text NOT NULL,
            program_id        text NOT NULL,
            display_name      text,
            enrolled_at       timestamptz,
            first_referral_at timestamptz
        );
        CREATE INDEX analytics_advocates_enrolled ON analytics_advocates (program_id, enrolled_at);

        -- One referred friend: who referred them, when, and their first purchase (cycle time).
        CREATE TABLE analytics_referrals (
            program_id         text NOT NULL,
            friend_customer_id text NOT NULL,
            advocate_id        text COLLATE "C" NOT NULL,
            referred_at        timestamptz,
            first_purchase_at  timestamptz,
            PRIMARY KEY (program_id, friend_customer_id)
        );
        CREATE INDEX analytics_referrals_purchase
            ON analytics_referrals (program_id, first_purchase_at);

        -- One reward's issued amount and day (reward.pending or reward.available, whichever
        -- arrives first; the largest amount seen, since a partial void lowers what `available`
        -- carries): the issued counter moves by the difference.
        CREATE TABLE analytics_rewards (
            reward_id  text PRIMARY KEY,
            program_id text NOT NULL,
            unit       text NOT NULL,
            day        date NOT NULL,
            issued     bigint NOT NULL
        );

        -- The leaderboard index: a score per (program, metric, period, advocate); the top is
        -- a range scan of the second index. Advocate ids compare bytewise (COLLATE "C", in
        -- every analytics table, so joins use the indexes), so an id's block (its first
        -- characters) sorts exactly as the ids in it do.
        CREATE TABLE analytics_leaderboard (
            program_id  text NOT NULL,
            metric      text NOT NULL,
            period      text NOT NULL,
            advocate_id text COLLATE "C" NOT NULL,
            score       bigint NOT NULL,
            PRIMARY KEY (program_id, metric, period, advocate_id)
        );
        CREATE INDEX analytics_leaderboard_rank
            ON analytics_leaderboard (program_id, metric, period, score DESC, advocate_id);

        -- How many advocates hold each score (block ''), and each score within each block of
        -- ids: one advocate's rank is a sum over a few of these rows plus a count inside its
        -- own block, never a count over all advocates ahead of it.
        CREATE TABLE analytics_leaderboard_counts (
            program_id text NOT NULL,
            metric     text NOT NULL,
            period     text NOT NULL,
            score      bigint NOT NULL,
            block      text COLLATE "C" NOT NULL,
            advocates  bigint NOT NULL,
            -- block first: the totals per score (block '') above a score are one short range
            PRIMARY KEY (program_id, metric, period, block, score)
        );
        -- the blocks before an id's own, at one score
        CREATE INDEX analytics_leaderboard_counts_score
            ON analytics_leaderboard_counts (program_id, metric, period, score, block);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE analytics_leaderboard_counts, analytics_leaderboard, analytics_rewards,
                   analytics_referrals, analytics_advocates, analytics_members,
                   analytics_advocate_counters, analytics_counters, analytics_programs;
        """
    )

"""the advocate's side: per-program portal settings (CORS origins, auto-enrollment, cookie
days), who referred an auto-enrolled advocate, and the /v1/me read model fed by attribution and
reward events

Revision ID: 0005
"""

from alembic import op

revision = "0005"
# 0004 and 0005 are taken by work merged beside this one: the lead re-points this at "0005".
down_revision = "0004"


def upgrade() -> None:
    op.execute(
        """
        -- The advocate-facing settings of a program; a program without a row has no browser
        -- origins (so no CORS) and no auto-enrollment.
        CREATE TABLE portal_settings (
            program_id        text PRIMARY KEY REFERENCES programs (id),
            tenant_id         text NOT NULL,
            allowed_origins   text[] NOT NULL DEFAULT '{}',
            auto_enroll       text NOT NULL DEFAULT 'off'
                              CHECK (auto_enroll IN ('off', 'signup', 'purchase')),
            cookie_days       integer NOT NULL DEFAULT 30 CHECK (cookie_days BETWEEN 1 AND 365),
            -- Share reminders to advocates who never shared: at most reminder_max (0: none),
            -- every reminder_interval_days after enrolling.
            reminder_max      integer NOT NULL DEFAULT 0 CHECK (reminder_max BETWEEN 0 AND 10),
            reminder_interval_days integer NOT NULL DEFAULT 7
                              CHECK (reminder_interval_days BETWEEN 1 AND 90),
            updated_at        timestamptz NOT NULL DEFAULT now()
        );
        -- A preflight carries no token: it is answered for origins some program allows.
        CREATE INDEX portal_settings_origins ON portal_settings USING gin (allowed_origins);

        -- Generations of the viral loop: who referred an advocate enrolled from a conversion.
        ALTER TABLE advocates ADD COLUMN referred_by text;

        -- One row per referral of an advocate, as attribution told it. friend_label is already
        -- masked (never the friend's email or name).
        CREATE TABLE portal_referrals (
            referral_id   text PRIMARY KEY,
            tenant_id     text NOT NULL,
            advocate_id   text NOT NULL,
            friend_label  text NOT NULL,
            signed_up     boolean NOT NULL DEFAULT false,
            purchased     boolean NOT NULL DEFAULT false,
            rewarded      boolean NOT NULL DEFAULT false,
            refunded      boolean NOT NULL DEFAULT false,
            created_at    timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX portal_referrals_advocate ON portal_referrals (advocate_id, created_at);

        -- Which referral a conversion belongs to (reward events name the conversion only).
        CREATE TABLE portal_conversions (
            conversion_id text PRIMARY KEY,
            referral_id   text NOT NULL
        );

        -- The advocate's rewards by state; amount is what the reward still holds (minor units).
        CREATE TABLE portal_rewards (
            reward_id     text PRIMARY KEY,
            advocate_id   text NOT NULL,
            conversion_id text,
            unit          text NOT NULL,
            amount        bigint NOT NULL,
            state         text NOT NULL CHECK (state IN ('pending', 'available', 'voided'))
        );
        CREATE INDEX portal_rewards_advocate ON portal_rewards (advocate_id);

        CREATE TABLE portal_redemptions (
            redemption_id text PRIMARY KEY,
            advocate_id   text NOT NULL,
            unit          text NOT NULL,
            amount        bigint NOT NULL
        );
        CREATE INDEX portal_redemptions_advocate ON portal_redemptions (advocate_id);

        -- The reminder schedule: durable, so a restart or another replica resumes it; a row
        -- is claimed FOR UPDATE SKIP LOCKED when due.
        CREATE TABLE portal_reminders (
            advocate_id   text PRIMARY KEY REFERENCES advocates (id),
            tenant_id     text NOT NULL,
            program_id    text NOT NULL,
            sent          integer NOT NULL DEFAULT 0,
            due_at        timestamptz NOT NULL,
            done          boolean NOT NULL DEFAULT false
        );
        CREATE INDEX portal_reminders_due ON portal_reminders (due_at) WHERE NOT done;

        CREATE TABLE portal_milestones (
            advocate_id    text PRIMARY KEY,
            referral_count integer NOT NULL,
            milestone      integer NOT NULL
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE portal_reminders, portal_milestones, portal_redemptions, portal_rewards,
            portal_conversions, portal_referrals, portal_settings;
        ALTER TABLE advocates DROP COLUMN referred_by;
        """
    )

"""local copies of programs, advocates, codes and clicks; referrals and conversions

Revision ID: 0001
"""

from alembic import op

from referral_events.sql import DROP_OUTBOX_INBOX_V1, OUTBOX_INBOX_V1

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute(OUTBOX_INBOX_V1)
    op.execute(
        """
        -- Copies of link-service's facts, kept from link.events / link.clicks. No foreign keys
        -- between them: events of different keys arrive in any order.
        CREATE TABLE programs (
            id                     text PRIMARY KEY,
            tenant_id              text NOT NULL,
            status                 text NOT NULL,
            attribution_window_days integer NOT NULL DEFAULT 30
                                   CHECK (attribution_window_days BETWEEN 1 AND 365),
            updated_at             timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE advocates (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            customer_id text NOT NULL,
            blocked     boolean NOT NULL DEFAULT false
        );

        CREATE TABLE codes (
            code_key    text PRIMARY KEY,
            code        text NOT NULL,
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            advocate_id text NOT NULL
        );

        -- ip_hash is personal data (keyed HMAC of the address).
        CREATE TABLE clicks (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            code        text NOT NULL,
            program_id  text NOT NULL,
            advocate_id text NOT NULL,
            clicked_at  timestamptz NOT NULL,
            ip_hash     text,
            is_bot      boolean NOT NULL,
            counts      boolean NOT NULL
        );

        CREATE TABLE referrals (
            id                 text PRIMARY KEY,
            tenant_id          text NOT NULL,
            program_id         text NOT NULL,
            advocate_id        text NOT NULL,
            friend_customer_id text NOT NULL,
            evidence           text NOT NULL,
            click_id           text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, program_id, friend_customer_id)
        );
        CREATE INDEX referrals_friend ON referrals (tenant_id, friend_customer_id, created_at);

        -- email is personal data; kept only to screen self-referrals.
        CREATE TABLE conversions (
            id                text PRIMARY KEY,
            tenant_id         text NOT NULL,
            type              text NOT NULL,
            customer_id       text NOT NULL,
            email             text,
            order_id          text,
            amount_minor      bigint CHECK (amount_minor >= 0),
            currency          text,
            occurred_at       timestamptz NOT NULL,
            click_id          text,
            code_key          text,
            idempotency_key   text,
            request_hash      text NOT NULL,
            status            text NOT NULL
                              CHECK (status IN ('pending', 'attributed', 'rejected', 'organic')),
            program_id        text,
            advocate_id       text,
            referral_id       text,
            evidence          text,
            is_first_purchase boolean NOT NULL DEFAULT false,
            explanation       jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at        timestamptz NOT NULL DEFAULT now(),
            decided_at        timestamptz
        );
        CREATE UNIQUE INDEX conversions_idempotency ON conversions (tenant_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE UNIQUE INDEX conversions_order ON conversions (tenant_id, type, order_id)
            WHERE order_id IS NOT NULL;
        CREATE INDEX conversions_pending_click ON conversions (click_id) WHERE status = 'pending';
        CREATE INDEX conversions_pending_code ON conversions (code_key) WHERE status = 'pending';
        CREATE INDEX conversions_referral ON conversions (referral_id, type);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE conversions, referrals, clicks, codes, advocates, programs")
    op.execute(DROP_OUTBOX_INBOX_V1)

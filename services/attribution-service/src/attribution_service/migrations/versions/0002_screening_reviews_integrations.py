"""program settings and fraud policy, richer link copies, reviews, refunds, cancellations,
commerce integrations and webhook receipts

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE programs
            ADD COLUMN name       text,
            ADD COLUMN starts_at  timestamptz,
            ADD COLUMN ends_at    timestamptz,
            ADD COLUMN version    bigint NOT NULL DEFAULT 0;

        -- email / email_norm are personal data (self-referral screening only).
        ALTER TABLE advocates
            ADD COLUMN email       text,
            ADD COLUMN email_norm  text,
            ADD COLUMN version     bigint NOT NULL DEFAULT 0;

        ALTER TABLE codes ADD COLUMN alias_of text;

        ALTER TABLE clicks
            ADD COLUMN device_class    text,
            ADD COLUMN inactive_reason text;

        -- Attribution settings and fraud policy per program, set through this service's API.
        -- Keyed by program id alone, so settings may be written before the program's copy
        -- arrives from link.events.
        CREATE TABLE program_settings (
            program_id  text PRIMARY KEY,
            tenant_id   text NOT NULL,
            settings    jsonb NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );

        -- Which clicks a customer is known to have made (named by their conversions): the
        -- candidates of first-click / last-click attribution.
        CREATE TABLE customer_clicks (
            tenant_id   text NOT NULL,
            customer_id text NOT NULL,
            click_id    text NOT NULL,
            PRIMARY KEY (tenant_id, customer_id, click_id)
        );

        -- ip_hash, device_hash, email_norm are personal data (keyed hashes / normalised email).
        ALTER TABLE conversions
            ADD COLUMN custom_type       text,
            ADD COLUMN subscription_id   text,
            ADD COLUMN ip_hash           text,
            ADD COLUMN device_hash       text,
            ADD COLUMN email_norm        text,
            ADD COLUMN existing_customer boolean NOT NULL DEFAULT false,
            ADD COLUMN locale            text,
            ADD COLUMN decision          text CHECK (decision IN ('allow', 'review', 'deny')),
            ADD COLUMN sequence          integer,
            ADD COLUMN refunded_minor    bigint NOT NULL DEFAULT 0,
            ADD COLUMN source            text NOT NULL DEFAULT 'api';
        ALTER TABLE conversions DROP CONSTRAINT conversions_status_check;
        ALTER TABLE conversions ADD CONSTRAINT conversions_status_check
            CHECK (status IN ('pending', 'attributed', 'rejected', 'organic', 'review'));
        ALTER TABLE conversions ADD CONSTRAINT conversions_refund_le_amount
            CHECK (refunded_minor <= coalesce(amount_minor, 0));
        CREATE INDEX conversions_customer ON conversions (tenant_id, customer_id, occurred_at);
        CREATE INDEX conversions_advocate ON conversions (advocate_id, occurred_at)
            WHERE advocate_id IS NOT NULL;
        CREATE INDEX conversions_ip ON conversions (tenant_id, ip_hash, occurred_at)
            WHERE ip_hash IS NOT NULL;
        CREATE INDEX conversions_device ON conversions (tenant_id, device_hash, occurred_at)
            WHERE device_hash IS NOT NULL;
        CREATE INDEX conversions_order_any ON conversions (tenant_id, order_id);
        CREATE INDEX conversions_subscription ON conversions (tenant_id, subscription_id)
            WHERE subscription_id IS NOT NULL;

        -- Click or code ids that were awaited and never arrived: later conversions naming them
        -- are refused at once.
        CREATE TABLE expired_evidence (
            tenant_id  text NOT NULL,
            kind       text NOT NULL CHECK (kind IN ('click', 'code')),
            value      text NOT NULL,
            expired_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, kind, value)
        );

        CREATE TABLE reviews (
            id              text PRIMARY KEY,
            tenant_id       text NOT NULL,
            conversion_id   text NOT NULL UNIQUE REFERENCES conversions (id),
            program_id      text NOT NULL,
            advocate_id     text NOT NULL,
            reasons         text[] NOT NULL,
            status          text NOT NULL DEFAULT 'open'
                            CHECK (status IN ('open', 'approved', 'denied')),
            decision_reason text,
            decided_by      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            decided_at      timestamptz
        );
        CREATE INDEX reviews_open ON reviews (tenant_id, status, created_at);

        CREATE TABLE refunds (
            id            text PRIMARY KEY,
            tenant_id     text NOT NULL,
            conversion_id text NOT NULL REFERENCES conversions (id),
            external_id   text NOT NULL,
            amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
            currency      text NOT NULL,
            total_minor   bigint NOT NULL,
            full_refund   boolean NOT NULL,
            request_hash  text NOT NULL,
            refunded_at   timestamptz NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, conversion_id, external_id)
        );

        CREATE TABLE subscription_cancellations (
            tenant_id       text NOT NULL,
            subscription_id text NOT NULL,
            customer_id     text,
            cancelled_at    timestamptz NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, subscription_id)
        );

        -- Per-tenant webhook secrets of commerce platforms. Secrets, not personal data; the API
        -- never returns them.
        CREATE TABLE integrations (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            provider    text NOT NULL CHECK (provider IN ('shopify', 'stripe')),
            account     text NOT NULL,
            secret      text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, provider, account)
        );

        -- One row per verified webhook delivery: a replay of the same delivery id is refused.
        CREATE TABLE webhook_receipts (
            integration_id text NOT NULL,
            delivery_id    text NOT NULL,
            topic          text NOT NULL,
            outcome        jsonb NOT NULL,
            received_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (integration_id, delivery_id)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE webhook_receipts, integrations, subscription_cancellations, refunds, reviews,
                   expired_evidence, customer_clicks, program_settings;
        ALTER TABLE conversions DROP CONSTRAINT conversions_refund_le_amount;
        ALTER TABLE conversions DROP CONSTRAINT conversions_status_check;
        DELETE FROM conversions WHERE status = 'review';
        ALTER TABLE conversions ADD CONSTRAINT conversions_status_check
            CHECK (status IN ('pending', 'attributed', 'rejected', 'organic'));
        DROP INDEX conversions_customer, conversions_advocate, conversions_ip, conversions_device,
                   conversions_order_any, conversions_subscription;
        ALTER TABLE conversions DROP COLUMN custom_type, DROP COLUMN subscription_id,
            DROP COLUMN ip_hash, DROP COLUMN device_hash, DROP COLUMN email_norm,
            DROP COLUMN existing_customer, DROP COLUMN locale, DROP COLUMN decision,
            DROP COLUMN sequence, DROP COLUMN refunded_minor, DROP COLUMN source;
        ALTER TABLE clicks DROP COLUMN device_class, DROP COLUMN inactive_reason;
        ALTER TABLE codes DROP COLUMN alias_of;
        ALTER TABLE advocates DROP COLUMN email, DROP COLUMN email_norm, DROP COLUMN version;
        ALTER TABLE programs DROP COLUMN name, DROP COLUMN starts_at, DROP COLUMN ends_at,
            DROP COLUMN version;
        """
    )

"""analytics: every purchase the merchant reports, referred or not, per customer (issue #22,
customer value and CLV of referred customers beside the merchant's others); A/B experiments

Revision ID: 0008
"""

from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.execute(
        """
        -- One customer of a tenant: the program that referred them (NULL: never referred), and
        -- their first and last purchase (the observed lifespan). Folded where the conversion is
        -- decided, in its transaction, because non-referred purchases publish no event.
        CREATE TABLE analytics_customers (
            tenant_id           text NOT NULL,
            customer_id         text NOT NULL,
            referred_program_id text,
            first_purchase_at   timestamptz NOT NULL,
            last_purchase_at    timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, customer_id)
        );

        -- Purchases and revenue per customer, currency and day.
        CREATE TABLE analytics_customer_days (
            tenant_id     text NOT NULL,
            customer_id   text NOT NULL,
            currency      text NOT NULL,
            day           date NOT NULL,
            purchases     bigint NOT NULL,
            revenue_minor bigint NOT NULL,
            PRIMARY KEY (tenant_id, day, customer_id, currency)
        );

        -- This service's own events (attribution.events) written with the change they announce
        -- and folded into the analytics read models by a background worker, each in the
        -- transaction that deletes its row: folding them in the conversions' own transactions
        -- would make every conversion wait for the program's shared counter rows.
        CREATE TABLE analytics_emitted (
            event_id   text PRIMARY KEY,
            payload    text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX analytics_emitted_age ON analytics_emitted (created_at);

        -- A/B experiments of programs: variants with weights, a salt for the sticky
        -- assignment (kept here, so it survives restarts), and the lifecycle.
        CREATE TABLE experiments (
            id         text PRIMARY KEY,
            tenant_id  text NOT NULL,
            program_id text NOT NULL,
            name       text NOT NULL,
            kind       text NOT NULL,
            salt       text NOT NULL,
            variants   jsonb NOT NULL,
            status     text NOT NULL DEFAULT 'draft',
            winner     text,
            started_at timestamptz,
            ended_at   timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        -- one live (running or paused) experiment per program
        CREATE UNIQUE INDEX experiments_live ON experiments (program_id)
            WHERE status IN ('running', 'paused');
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE experiments, analytics_emitted, analytics_customer_days, analytics_customers"
    )

"""rule versions, rewards, ledger accounts and transfers; outbox and inbox

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
        -- Rules, versions, ledger entries are history: corrections are new rows, never edits.
        CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END $$;

        -- A rule belongs to the tenant that wrote it; there is no local copy of the program:
        -- a conversion's envelope tenant + program_id select the rule, so a tenant can only
        -- ever be rewarded under its own rules. The version in force at a conversion's
        -- occurred_at is the one with the latest valid_from <= occurred_at.
        CREATE TABLE rule_versions (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            version     integer NOT NULL CHECK (version > 0),
            valid_from  timestamptz NOT NULL,
            hold_days   integer NOT NULL CHECK (hold_days >= 0),
            created_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, program_id, version)
        );
        CREATE INDEX rule_versions_in_force
            ON rule_versions (tenant_id, program_id, valid_from DESC, version DESC);
        CREATE TRIGGER rule_versions_append_only BEFORE UPDATE OR DELETE ON rule_versions
            FOR EACH ROW EXECUTE FUNCTION forbid_change();

        -- One row per rewarded side of a version (advocate now, friend later); percent
        -- amounts, minimum orders, tiers and caps grow here as columns or child tables.
        CREATE TABLE rule_rewards (
            rule_version_id text NOT NULL REFERENCES rule_versions (id),
            role            text NOT NULL CHECK (role IN ('advocate', 'friend')),
            trigger         text NOT NULL
                            CHECK (trigger IN ('first_purchase', 'every_purchase', 'signup')),
            kind            text NOT NULL CHECK (kind IN ('credit')),
            amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
            unit            text NOT NULL,
            PRIMARY KEY (rule_version_id, role)
        );
        CREATE TRIGGER rule_rewards_append_only BEFORE UPDATE OR DELETE ON rule_rewards
            FOR EACH ROW EXECUTE FUNCTION forbid_change();

        -- (conversion, rule version, role) is the domain's own idempotency key: a conversion
        -- earns at most one reward per side per rule, whatever is redelivered.
        CREATE TABLE rewards (
            id              text PRIMARY KEY,
            tenant_id       text NOT NULL,
            program_id      text NOT NULL,
            rule_version_id text NOT NULL REFERENCES rule_versions (id),
            role            text NOT NULL CHECK (role IN ('advocate', 'friend')),
            holder_type     text NOT NULL,
            holder_id       text NOT NULL,
            advocate_id     text NOT NULL,
            conversion_id   text NOT NULL,
            referral_id     text NOT NULL,
            kind            text NOT NULL,
            amount          bigint NOT NULL CHECK (amount > 0),
            unit            text NOT NULL,
            state           text NOT NULL CHECK (state IN ('pending', 'available')),
            available_at    timestamptz NOT NULL,
            source_event_id text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            released_at     timestamptz,
            UNIQUE (conversion_id, rule_version_id, role)
        );
        -- The release schedule: what is due is read from here, so restarts lose nothing.
        CREATE INDEX rewards_due ON rewards (available_at) WHERE state = 'pending';
        CREATE INDEX rewards_holder ON rewards (tenant_id, holder_id, created_at);

        -- Ids are derived from (tenant, holder, kind, unit); see domain.AccountRef.
        CREATE TABLE accounts (
            id          uuid PRIMARY KEY,
            tenant_id   text NOT NULL,
            holder_type text NOT NULL CHECK (holder_type IN ('program', 'advocate', 'customer')),
            holder_id   text NOT NULL,
            kind        text NOT NULL
                        CHECK (kind IN ('liability', 'pending', 'available', 'redeemed',
                                        'paid_out')),
            unit        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, holder_type, holder_id, kind, unit),
            -- target of the transfers' composite keys below
            UNIQUE (id, tenant_id, unit)
        );
        CREATE INDEX accounts_holder ON accounts (tenant_id, holder_id);
        CREATE TRIGGER accounts_append_only BEFORE UPDATE OR DELETE ON accounts
            FOR EACH ROW EXECUTE FUNCTION forbid_change();

        -- Double entry: each row debits one account and credits another by the same amount,
        -- so every unit sums to zero by construction. Balances are sums over these rows.
        -- The id derives from the cause (conversion + rule version + side + leg): a replay
        -- re-derives it and the primary key refuses a second posting. The composite foreign
        -- keys keep both accounts in the transfer's tenant and unit.
        CREATE TABLE transfers (
            id             uuid PRIMARY KEY,
            tenant_id      text NOT NULL,
            debit_account  uuid NOT NULL,
            credit_account uuid NOT NULL,
            amount         bigint NOT NULL CHECK (amount > 0),
            unit           text NOT NULL,
            cause          text NOT NULL,
            reward_id      text REFERENCES rewards (id),
            leg            text NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now(),
            CHECK (debit_account <> credit_account),
            FOREIGN KEY (debit_account, tenant_id, unit) REFERENCES accounts (id, tenant_id, unit),
            FOREIGN KEY (credit_account, tenant_id, unit) REFERENCES accounts (id, tenant_id, unit)
        );
        CREATE INDEX transfers_debit ON transfers (debit_account) INCLUDE (amount);
        CREATE INDEX transfers_credit ON transfers (credit_account) INCLUDE (amount);
        CREATE INDEX transfers_reward ON transfers (reward_id);
        CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
            FOR EACH ROW EXECUTE FUNCTION forbid_change();
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE transfers, accounts, rewards, rule_rewards, rule_versions")
    op.execute("DROP FUNCTION forbid_change()")
    op.execute(DROP_OUTBOX_INBOX_V1)

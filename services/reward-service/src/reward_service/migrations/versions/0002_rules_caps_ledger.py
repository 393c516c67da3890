"""two-sided rules as documents, tiers/caps/budget state, balance rows, refunds, redemptions,
coupon pools, payouts

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        -- A rule version is one document (sides, tiers, milestones, caps, budget): it is read
        -- whole and never queried by its parts. Existing versions are carried over as is.
        ALTER TABLE rule_versions ADD COLUMN definition jsonb;
        ALTER TABLE rule_versions DISABLE TRIGGER rule_versions_append_only;
        UPDATE rule_versions v SET definition = jsonb_build_object(
            'hold_days', v.hold_days,
            'clawback', 'negative_entry',
            'rewards', (SELECT jsonb_agg(jsonb_build_object(
                            'role', r.role, 'trigger', r.trigger, 'kind', r.kind,
                            'amount', jsonb_build_object('unit', r.unit,
                                                         'fixed', r.amount_minor,
                                                         'rounding', 'half_even'),
                            'tiers', '[]'::jsonb) ORDER BY r.role)
                        FROM rule_rewards r WHERE r.rule_version_id = v.id),
            'milestones', '[]'::jsonb, 'caps', '[]'::jsonb, 'budget', NULL);
        ALTER TABLE rule_versions ENABLE TRIGGER rule_versions_append_only;
        ALTER TABLE rule_versions ALTER COLUMN definition SET NOT NULL;
        DROP TABLE rule_rewards;

        -- A reward row is also the record of a capped one (amount 0 or less than asked, with
        -- the reason), of voids and claw-backs (amounts taken back so far) and of the milestone
        -- bonuses (purpose). The release schedule stays the partial index on pending rows.
        ALTER TABLE rewards DROP CONSTRAINT rewards_amount_check;
        ALTER TABLE rewards ADD CONSTRAINT rewards_amount_check CHECK (amount >= 0);
        ALTER TABLE rewards DROP CONSTRAINT rewards_state_check;
        ALTER TABLE rewards ADD CONSTRAINT rewards_state_check
            CHECK (state IN ('pending', 'available', 'voided', 'capped'));
        ALTER TABLE rewards DROP CONSTRAINT rewards_conversion_id_rule_version_id_role_key;
        ALTER TABLE rewards
            ADD COLUMN purpose text NOT NULL DEFAULT 'referral'
                CHECK (purpose IN ('referral', 'milestone')),
            ADD COLUMN requested_amount bigint NOT NULL DEFAULT 0,
            ADD COLUMN capped_reason text,
            ADD COLUMN capped_period text,
            ADD COLUMN trigger text,
            ADD COLUMN rule_version integer,
            ADD COLUMN scalable boolean NOT NULL DEFAULT false,
            ADD COLUMN order_amount_minor bigint,
            ADD COLUMN voided_amount bigint NOT NULL DEFAULT 0 CHECK (voided_amount >= 0),
            ADD COLUMN clawed_back_amount bigint NOT NULL DEFAULT 0
                CHECK (clawed_back_amount >= 0),
            ADD COLUMN clawback text NOT NULL DEFAULT 'negative_entry'
                CHECK (clawback IN ('negative_entry', 'debt')),
            ADD COLUMN voided_at timestamptz,
            ADD COLUMN occurred_at timestamptz,
            ADD CONSTRAINT rewards_taken_back CHECK (voided_amount + clawed_back_amount <= amount);
        UPDATE rewards SET requested_amount = amount;
        ALTER TABLE rewards ADD CONSTRAINT rewards_once
            UNIQUE (tenant_id, conversion_id, rule_version_id, role, purpose);
        CREATE INDEX rewards_conversion ON rewards (tenant_id, conversion_id);

        -- Accounts gain a purse (cash is kept apart from credit in the same currency, since only
        -- cash is paid out) and the kinds of debt and in-flight payouts.
        ALTER TABLE accounts ADD COLUMN purse text NOT NULL DEFAULT 'credit'
            CHECK (purse IN ('credit', 'cash'));
        ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
        ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
            CHECK (kind IN ('liability', 'pending', 'available', 'redeemed', 'paid_out', 'debt',
                            'in_payout'));
        ALTER TABLE accounts
            DROP CONSTRAINT accounts_tenant_id_holder_type_holder_id_kind_unit_key;
        ALTER TABLE accounts ADD CONSTRAINT accounts_identity
            UNIQUE (tenant_id, holder_type, holder_id, kind, unit, purse);

        -- The running balance of every account, moved in the same statement that inserts the
        -- transfers. Its row is what a redemption or payout locks, so two of them can never both
        -- spend the same money; `verify` checks each against the sum of its entries.
        CREATE TABLE balances (
            account_id uuid PRIMARY KEY REFERENCES accounts (id),
            balance    bigint NOT NULL DEFAULT 0
        );
        INSERT INTO balances (account_id, balance)
        SELECT a.id,
               coalesce((SELECT sum(amount) FROM transfers WHERE credit_account = a.id), 0)
             - coalesce((SELECT sum(amount) FROM transfers WHERE debit_account = a.id), 0)
        FROM accounts a;

        -- A stable order for statements and their cursors.
        ALTER TABLE transfers ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
        CREATE UNIQUE INDEX transfers_seq ON transfers (seq);
        CREATE INDEX transfers_cause ON transfers (tenant_id, cause);

        -- The advocate's successful referrals, numbered in order: the number selects the tier and
        -- the milestones. The counter row is also the advocate's lock while caps are checked.
        CREATE TABLE advocate_counters (
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            advocate_id text NOT NULL,
            referrals   integer NOT NULL DEFAULT 0 CHECK (referrals >= 0),
            PRIMARY KEY (tenant_id, program_id, advocate_id)
        );
        CREATE TABLE successful_referrals (
            tenant_id     text NOT NULL,
            program_id    text NOT NULL,
            referral_id   text NOT NULL,
            advocate_id   text NOT NULL,
            number        integer NOT NULL CHECK (number > 0),
            conversion_id text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, program_id, referral_id),
            UNIQUE (tenant_id, program_id, advocate_id, number)
        );

        -- What an advocate has been granted per cap period (count and amount in the cap's unit).
        CREATE TABLE cap_usage (
            tenant_id   text NOT NULL,
            program_id  text NOT NULL,
            advocate_id text NOT NULL,
            period_key  text NOT NULL,
            unit        text NOT NULL,
            count       integer NOT NULL DEFAULT 0 CHECK (count >= 0),
            amount      bigint NOT NULL DEFAULT 0 CHECK (amount >= 0),
            PRIMARY KEY (tenant_id, program_id, advocate_id, period_key, unit)
        );
        -- A program's spend per unit against its budget (the budget itself is in the rule).
        CREATE TABLE program_spend (
            tenant_id  text NOT NULL,
            program_id text NOT NULL,
            unit       text NOT NULL,
            spent      bigint NOT NULL DEFAULT 0 CHECK (spent >= 0),
            PRIMARY KEY (tenant_id, program_id, unit)
        );

        -- A refund is applied once, whatever event id it arrives under.
        CREATE TABLE refunds (
            tenant_id     text NOT NULL,
            refund_id     text NOT NULL,
            conversion_id text NOT NULL,
            amount_minor  bigint NOT NULL,
            refunded_total_minor bigint NOT NULL,
            full_refund   boolean NOT NULL,
            refunded_at   timestamptz NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, refund_id)
        );

        CREATE TABLE redemptions (
            id              text PRIMARY KEY,
            tenant_id       text NOT NULL,
            holder_type     text NOT NULL,
            holder_id       text NOT NULL,
            idempotency_key text NOT NULL,
            request_hash    text NOT NULL,
            amount          bigint NOT NULL CHECK (amount > 0),
            unit            text NOT NULL,
            reference       text,
            created_at      timestamptz NOT NULL,
            UNIQUE (tenant_id, holder_id, idempotency_key)
        );

        CREATE TABLE coupon_pools (
            id            text PRIMARY KEY,
            tenant_id     text NOT NULL,
            program_id    text NOT NULL,
            name          text NOT NULL,
            low_threshold integer NOT NULL CHECK (low_threshold >= 0),
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX coupon_pools_program ON coupon_pools (tenant_id, program_id);
        -- Each code is handed out once: allocation takes an unallocated row FOR UPDATE SKIP
        -- LOCKED and stamps it with the reward; the partial index finds free codes fast.
        CREATE TABLE coupon_codes (
            pool_id      text NOT NULL REFERENCES coupon_pools (id),
            code         text NOT NULL,
            reward_id    text UNIQUE REFERENCES rewards (id),
            holder_id    text,
            allocated_at timestamptz,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (pool_id, code)
        );
        CREATE INDEX coupon_codes_free ON coupon_codes (pool_id, created_at, code)
            WHERE reward_id IS NULL;

        CREATE TABLE payout_batches (
            id          text PRIMARY KEY,
            tenant_id   text NOT NULL,
            unit        text NOT NULL,
            threshold   bigint NOT NULL CHECK (threshold > 0),
            created_at  timestamptz NOT NULL
        );
        CREATE TABLE payout_lines (
            id          text PRIMARY KEY,
            batch_id    text NOT NULL REFERENCES payout_batches (id),
            tenant_id   text NOT NULL,
            holder_type text NOT NULL,
            holder_id   text NOT NULL,
            amount      bigint NOT NULL CHECK (amount > 0),
            unit        text NOT NULL,
            status      text NOT NULL CHECK (status IN ('pending', 'paid', 'failed')),
            reference   text,
            reason      text,
            updated_at  timestamptz NOT NULL
        );
        CREATE INDEX payout_lines_batch ON payout_lines (batch_id, id);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE payout_lines, payout_batches, coupon_codes, coupon_pools, redemptions, refunds,
                   program_spend, cap_usage, successful_referrals, advocate_counters, balances;
        DROP INDEX transfers_seq;
        DROP INDEX transfers_cause;
        ALTER TABLE transfers DROP COLUMN seq;
        ALTER TABLE accounts DROP CONSTRAINT accounts_identity;
        ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
        ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
            CHECK (kind IN ('liability', 'pending', 'available', 'redeemed', 'paid_out'));
        ALTER TABLE accounts DROP COLUMN purse;
        ALTER TABLE accounts ADD CONSTRAINT accounts_tenant_id_holder_type_holder_id_kind_unit_key
            UNIQUE (tenant_id, holder_type, holder_id, kind, unit);
        DROP INDEX rewards_conversion;
        ALTER TABLE rewards DROP CONSTRAINT rewards_once;
        ALTER TABLE rewards DROP CONSTRAINT rewards_taken_back;
        ALTER TABLE rewards DROP COLUMN purpose, DROP COLUMN requested_amount,
            DROP COLUMN capped_reason, DROP COLUMN capped_period, DROP COLUMN trigger,
            DROP COLUMN rule_version, DROP COLUMN scalable, DROP COLUMN order_amount_minor,
            DROP COLUMN voided_amount, DROP COLUMN clawed_back_amount, DROP COLUMN clawback,
            DROP COLUMN voided_at, DROP COLUMN occurred_at;
        ALTER TABLE rewards ADD CONSTRAINT rewards_conversion_id_rule_version_id_role_key
            UNIQUE (conversion_id, rule_version_id, role);
        ALTER TABLE rewards DROP CONSTRAINT rewards_state_check;
        ALTER TABLE rewards ADD CONSTRAINT rewards_state_check
            CHECK (state IN ('pending', 'available'));
        ALTER TABLE rewards DROP CONSTRAINT rewards_amount_check;
        ALTER TABLE rewards ADD CONSTRAINT rewards_amount_check CHECK (amount > 0);
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
        -- Only what the first schema can express goes back (fixed credit on its triggers).
        INSERT INTO rule_rewards (rule_version_id, role, trigger, kind, amount_minor, unit)
        SELECT v.id, s->>'role', s->>'trigger', 'credit', (s->'amount'->>'fixed')::bigint,
               s->'amount'->>'unit'
        FROM rule_versions v, jsonb_array_elements(v.definition->'rewards') s
        WHERE s->>'trigger' IN ('first_purchase', 'every_purchase', 'signup')
          AND s->>'kind' = 'credit' AND (s->'amount'->>'fixed') IS NOT NULL;
        ALTER TABLE rule_versions DROP COLUMN definition;
        """
    )

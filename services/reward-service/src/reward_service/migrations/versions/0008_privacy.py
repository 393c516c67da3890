"""personal data requests (issue 19): the tombstones of erased people, which every consumer
checks before it writes (referral_events.privacy); ledger accounts stay append-only except that an
erasure may pseudonymise a holder (nothing else of the row, so balances and transfers stay)

Revision ID: 0008
"""

from alembic import op

from referral_events.privacy import DROP_TOMBSTONES_SQL_V1, TOMBSTONES_SQL_V1

revision = "0008"
# Other work adds revisions to this service beside this one: the lead re-chains this on merge.
down_revision = "0007"


def upgrade() -> None:
    op.execute(TOMBSTONES_SQL_V1)
    op.execute(
        """
        CREATE FUNCTION accounts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- an erasure's pseudonymous holder (reward_service.privacy), or no change at all
            IF TG_OP = 'UPDATE'
               AND (NEW.holder_id = OLD.holder_id OR NEW.holder_id LIKE 'erased\\_%')
               AND (to_jsonb(NEW) - 'holder_id') = (to_jsonb(OLD) - 'holder_id') THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END $$;
        DROP TRIGGER accounts_append_only ON accounts;
        CREATE TRIGGER accounts_append_only BEFORE UPDATE OR DELETE ON accounts
            FOR EACH ROW EXECUTE FUNCTION accounts_guard();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER accounts_append_only ON accounts;
        CREATE TRIGGER accounts_append_only BEFORE UPDATE OR DELETE ON accounts
            FOR EACH ROW EXECUTE FUNCTION forbid_change();
        DROP FUNCTION accounts_guard();
        """
    )
    op.execute(DROP_TOMBSTONES_SQL_V1)

"""emails: a final `skipped` status with its reason (a mail to a recipient without an address
stayed queued through every retry, then `failed`, though nothing had been tried); webhook
endpoints: an empty filter written out as the `*` it means

Revision ID: 0011 (numbered for issue 17; the lead re-chains down_revision on merge)
"""

from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.execute(
        """
        -- Expand only: one more status and a nullable column; the previous release never
        -- writes either, and still reads every row.
        ALTER TABLE emails DROP CONSTRAINT emails_status_check;
        ALTER TABLE emails ADD CONSTRAINT emails_status_check
            CHECK (status IN ('queued', 'sent', 'suppressed', 'failed', 'skipped'));
        ALTER TABLE emails ADD COLUMN skipped_reason text;

        -- New endpoints must name their event types (or get the documented default); the
        -- ones created before, with an empty filter, keep receiving every type, and now say
        -- so. An empty filter still matches everything (the previous release may create one
        -- during the rollout).
        UPDATE webhook_endpoints SET event_types = '{*}' WHERE event_types = '{}';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        UPDATE emails SET status = 'failed' WHERE status = 'skipped';
        ALTER TABLE emails DROP COLUMN skipped_reason;
        ALTER TABLE emails DROP CONSTRAINT emails_status_check;
        ALTER TABLE emails ADD CONSTRAINT emails_status_check
            CHECK (status IN ('queued', 'sent', 'suppressed', 'failed'));
        """
    )
